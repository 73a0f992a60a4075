"""How many labels does uncertainty sampling save? Active learning on digits, simulated annotator.

Protocol (pool-based active learning, the annotation assistant's core without its widget):

* Task: ``tlkit.datasets.few_labels(tlkit.datasets.load("digits", seed=s), k=1, seed=s)`` -- one
  labelled image per digit (10 labels) to start; the other 1,427 training images are the
  unlabelled pool; the 360-image test split measures accuracy.
* Each round: train a fresh ``small_cnn`` (``STEPS`` optimisation steps at 16 px, whatever the
  number of labels), evaluate it on the test split, ask the query strategy for ``ROUND`` more pool
  samples, and let a simulated annotator label them with their true labels.
* Stop when test accuracy reaches ``TARGET`` (90%) or the label budget is spent. The number
  reported is the total number of labels at that point, the 10 starting labels included.
* Strategies: ``margin`` and ``max_entropy`` (uncertainty sampling) against ``random``; every
  strategy starts from the same labelled images for a given seed (paired comparison); seeds 0-2.

Timing note: the number measured is labels, not seconds; the script pins torch to one thread,
which on a shared 2-core machine is several times faster than two.

    .venv/bin/python benchmarks/active_learning.py           # full run (~10-15 min on 2 cores)
    .venv/bin/python benchmarks/active_learning.py --quick   # smoke run, writes no results
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import tlkit
from tlkit.datasets import few_labels
from tlkit.notebook.annotate import ActiveLearner

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

STRATEGIES = ("margin", "max_entropy", "random")
SEEDS = (0, 1, 2)
TARGET = 0.90
ROUND = 5
BUDGET = 300
STEPS = 120
FIT_OPTIONS: dict[str, Any] = {"image_size": 16, "batch_size": 32, "lr": 3e-3, "mode": "full"}


@dataclass
class Outcome:
    strategy: str
    seed: int
    labels: int | None  # labels when the target was first reached; None: not within budget
    curve: list[dict[str, Any]]
    seconds: float


def ensure_query_strategies() -> None:
    """Register the first-party query strategies when their entry points are not installed."""
    from tlkit_strategies.query.random_query import RandomQuery
    from tlkit_strategies.query.uncertainty import EntropyQuery, MarginQuery

    have = {s.name for s in tlkit.strategies("query")}
    for cls in (MarginQuery, EntropyQuery, RandomQuery):
        if cls.name not in have:
            tlkit.register(cls)


def simulate(
    dataset: str, strategy: str, seed: int, *, steps: int, budget: int, target: float
) -> Outcome:
    """One active-learning run with a simulated annotator (the pool's clean labels)."""
    start = time.perf_counter()
    task = few_labels(tlkit.datasets.load(dataset, seed=seed), k=1, seed=seed)
    learner = ActiveLearner(
        task, "small_cnn", query=strategy, steps=steps, seed=seed, **FIT_OPTIONS
    )
    learner.retrain()
    while learner.curve[-1]["accuracy"] < target and learner.num_labelled < budget:
        idx = [p.index for p in learner.query(min(ROUND, budget - learner.num_labelled))]
        if not idx:
            break
        learner.label(idx, learner.pool.clean_labels[idx])  # the simulated annotator
        learner.retrain()
    reached = next((c["labelled"] for c in learner.curve if c["accuracy"] >= target), None)
    return Outcome(strategy, seed, reached, learner.curve, time.perf_counter() - start)


def summary_rows(outcomes: list[Outcome], budget: int) -> list[list[Any]]:
    rows = []
    for strategy in dict.fromkeys(o.strategy for o in outcomes):
        mine = [o for o in outcomes if o.strategy == strategy]
        reached = [o.labels for o in mine if o.labels is not None]
        mean, std = common.mean_std([float(v) for v in reached])
        per_seed = ", ".join(str(o.labels) if o.labels else f">{budget}" for o in mine)
        text = f"{mean:.0f} ± {std:.0f}" if len(reached) == len(mine) else "not all reached"
        start = common.mean_std([o.curve[0]["accuracy"] for o in mine])[0]
        rounds = sum(len(o.curve) for o in mine)
        seconds = sum(o.seconds for o in mine)
        rows.append([strategy, text, per_seed, f"{start:.1%}", rounds, f"{seconds:.0f}"])
    return rows


def curve_table(outcomes: list[Outcome]) -> str:
    """Mean test accuracy by number of labels (rounds present for every seed)."""
    lines = []
    for strategy in dict.fromkeys(o.strategy for o in outcomes):
        mine = [o for o in outcomes if o.strategy == strategy]
        depth = min(len(o.curve) for o in mine)
        points = [
            f"{mine[0].curve[i]['labelled']}: "
            f"{common.mean_std([o.curve[i]['accuracy'] for o in mine])[0]:.1%}"
            for i in range(depth)
        ]
        lines.append(f"- {strategy}: " + ", ".join(points))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, tiny budget, no results")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--results", help="markdown file to update (default: results/...)")
    args = parser.parse_args(argv)
    common.setup_torch("cpu", threads=1)
    ensure_query_strategies()
    seeds = SEEDS[:1] if args.quick else SEEDS
    steps, budget = (15, 30) if args.quick else (STEPS, BUDGET)
    info = common.machine_info("cpu")
    outcomes = []
    for seed in seeds:
        for strategy in STRATEGIES:
            o = simulate(args.dataset, strategy, seed, steps=steps, budget=budget, target=TARGET)
            print(
                f"seed {seed} {strategy:12s} labels={o.labels} rounds={len(o.curve)} "
                f"{o.seconds:.0f}s",
                flush=True,
            )
            outcomes.append(o)
    headers = [
        "query strategy",
        f"labels to {TARGET:.0%} (mean ± std)",
        "per seed",
        "accuracy with 10 labels",
        "rounds",
        "seconds",
    ]
    table = common.markdown_table(headers, summary_rows(outcomes, budget))
    print(table)
    path = common.results_path(args.results, "active_learning", args.quick)
    if path is not None:
        body = (
            f"{table}\n\nMean test accuracy by number of labels (rounds every seed ran):\n\n"
            f"{curve_table(outcomes)}\n\nSetup: {len(seeds)} seeds, {steps} steps per retrain, "
            f"{ROUND} labels per round, budget {budget}, fit options {FIT_OPTIONS}.\n\n"
            f"{common.machine_block(info, common.command_line())}"
        )
        title = f"{args.dataset}: labels to {TARGET:.0%} test accuracy, small_cnn"
        common.update_results(
            path, args.dataset, title, body, file_title="Active learning (annotation assistant)"
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
