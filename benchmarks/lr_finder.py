"""The learning-rate finder's picks against a small learning-rate sweep, on five small tasks
(three trained from scratch, two pretrained networks fine-tuned).

For each task and seed, ``tlkit.lr_find`` sweeps the rate exponentially from 1e-7 to 10 over at
most 100 steps (stopping when the smoothed loss exceeds 4x its minimum) and makes its four
picks (edge: the lowest loss's rate / 5, the default; steep; valley; minimum: the lowest loss's
rate / 10); then ``tlkit.fit`` trains with each pick. The
same fit runs with each rate of a fixed grid (five rates, half a decade apart). Reported: the
final test accuracy, mean +/- std over the seeds, for every grid rate and every pick, and
whether a pick's mean lies within one standard deviation of the best grid rate's mean, read
two ways:

* *at the grid rate*: ``mean_pick >= mean_best - std_best`` over the seeds at exactly that rate;
* *around it*: the same over the best rate's neighbourhood -- the seeds at 0.95x, 1x and 1.05x
  the rate (``JITTER``). A pick is never exactly a grid rate, and on the same seed a 5% change of
  rate moves the final accuracy by up to 0.14 (the fine-tunes) -- as much as changing the seed.
  The first reading compares a pick, which carries that variation, with one rate that does not,
  and with the best of five such means; a rate 5% off the grid's best can fail it. The second is
  looser (by about 0.03 on the fine-tunes); the first is the target.

Tasks (AdamW, cosine schedule, seeds 0-4; each task has its own grid around its best rate):

* ``digits`` (from scratch): the 1438 training digits (8x8, upsampled to 16 px), ``small_cnn``,
  ``mode="full"``, batch 32, 4 epochs; accuracy on the 359-image test split.
* ``digits-m`` (from scratch): the same digits blended into colour photo patches (32 px,
  downsampled to 16 px), harder and more sensitive to the rate; ``small_cnn``, ``mode="full"``,
  batch 32, 4 epochs.
* ``digits-m fine-tune`` (pretrained): the demo's task and backbone -- ``digits-m`` with 10
  labelled images per class (the same 100 for every seed), the ImageNet ``efficientnet_lite0``
  fine-tuned with ``mode="fine_tune"`` (2 epochs head-only on cached features, then every layer
  with discriminative rates, ``lr_spread=10``), 64 px, batch 20, 10 epochs; accuracy on the
  359-image test split. The finder sweeps the unfrozen phase (every layer at its discriminative
  rate), the phase in which too high a rate destroys the pretrained features.
* held out -- added after ``edge``'s divisor was read off ``digits-m`` and its fine-tune, to
  test it on data it was not chosen on: ``synth-digits`` (3000 digits rendered in
  matplotlib's fonts with random stroke, rotation, shear and blur; 32 px, grey) from scratch and
  fine-tuned, with the settings of the two tasks above.

Five seeds: with three, a 10-label fine-tune's accuracy at one rate moved by up to 0.09 between
neighbouring rates, more than the three seeds' std, so three seeds understated the spread.

Every fit's accuracy is appended to ``results/lr_finder_runs.jsonl`` (keyed by task, options,
seed, rate and ``ENGINE``) and read back instead of trained again, so a run can be split across
processes (``--tasks``) and a final run without it writes the tables from the stored fits:

    .venv/bin/python benchmarks/lr_finder.py --threads 1 --tasks digits,digits-m &
    .venv/bin/python benchmarks/lr_finder.py --threads 1 --tasks "digits-m fine-tune" &
    wait; .venv/bin/python benchmarks/lr_finder.py --threads 1   # the tables (~2 min)
    .venv/bin/python benchmarks/lr_finder.py --quick       # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import tlkit
from tlkit.engine.lr_finder import DEFAULT_METHOD, METHODS

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

SEEDS = (0, 1, 2, 3, 4)
#: Multiples of the grid's best rate trained to measure how much a small change of rate alone
#: moves the accuracy (the "around it" reading).
JITTER = (0.95, 1.05)
RUNS_FILE = common.RESULTS_DIR / "lr_finder_runs.jsonl"
#: What a stored fit was trained with beyond its options: a change here retrains every fit.
ENGINE = {"last_short_batch": "trained"}
COMMON: dict[str, Any] = {"device": "cpu", "precision": "fp32", "progress": False}
SCRATCH_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
FINE_TUNE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SCRATCH: dict[str, Any] = {
    "backbone": "small_cnn",
    "mode": "full",
    "image_size": 16,
    "batch_size": 32,
    "epochs": 4,
}
FINE_TUNE: dict[str, Any] = {
    "backbone": "efficientnet_lite0",
    "mode": "fine_tune",
    "freeze_epochs": 2,
    "lr_spread": 10.0,
    "image_size": 64,
    "batch_size": 20,
    "epochs": 10,
}
#: name -> (bundled dataset, labels per class or None for all, fit options, lr grid)
TASKS: dict[str, tuple[str, int | None, dict[str, Any], tuple[float, ...]]] = {
    "digits": ("digits", None, SCRATCH, SCRATCH_GRID),
    "digits-m": ("digits-m", None, SCRATCH, SCRATCH_GRID),
    "digits-m fine-tune": ("digits-m", 10, FINE_TUNE, FINE_TUNE_GRID),
    # Held out: added after the "edge" divisor (5) was read off the two tasks above.
    "synth-digits": ("synth-digits", None, SCRATCH, SCRATCH_GRID),
    "synth-digits fine-tune": ("synth-digits", 10, FINE_TUNE, FINE_TUNE_GRID),
}
#: Tasks the "edge" pick's divisor was not chosen on (the module docstring says how it was).
HELD_OUT = ("synth-digits", "synth-digits fine-tune")


def load_task(dataset: str, labels_per_class: int | None) -> Any:
    """The bundled task; with ``labels_per_class``, that many labelled images per class (the
    same ones for every seed) and no target domain."""
    task = tlkit.datasets.load(dataset)
    if labels_per_class is None:
        return task
    few = tlkit.datasets.few_labels(task, labels_per_class, seed=0)
    return dataclasses.replace(few, target=None, target_test=None)


def accuracy(task: Any, options: dict[str, Any], seed: int, lr: float) -> float:
    run = tlkit.fit(task, **options, **COMMON, seed=seed, lr=lr)
    return float(run.history[-1]["source_accuracy"])


def run_key(name: str, options: dict[str, Any], seed: int, lr: float) -> dict[str, Any]:
    """Everything that decides one fit's accuracy, as plain values (its runs-file key)."""
    return {"task": name, "options": options, "seed": seed, "lr": repr(float(lr)), "engine": ENGINE}


def mean_pm_std(values: list[float]) -> str:
    m, s = common.mean_std(values)
    return f"{m:.3f} ± {s:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (under a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    parser.add_argument("--tasks", help="comma-separated subset of tasks (stores fits, no table)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.tasks.split(",")] if args.tasks else list(TASKS)
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    stored = (
        {} if args.quick else {k: r["accuracy"] for k, r in common.load_runs(RUNS_FILE).items()}
    )
    trained = 0  # fits this invocation trained (the rest were read from RUNS_FILE)
    common.setup_torch("cpu", threads=args.threads)
    info = common.machine_info("cpu")
    wall = time.perf_counter()
    seeds = (0,) if args.quick else SEEDS
    sections = []
    verdicts: dict[str, list[str]] = {m: [] for m in METHODS}
    around: dict[str, list[str]] = {m: [] for m in METHODS}
    gaps: dict[str, list[float]] = {m: [] for m in METHODS}  # pick mean - best mean, per task
    for name in names:
        dataset, per_class, options, full_grid = TASKS[name]
        started = time.perf_counter()
        task = load_task(dataset, per_class)
        grid = full_grid[1:4:2] if args.quick else full_grid
        if args.quick:
            options = {**options, "epochs": 2 if options.get("freeze_epochs") else 1}
            options = {**options, "image_size": min(options["image_size"], 32)}
        runs: dict[tuple[int, float], float] = {}  # (seed, lr) -> accuracy: no fit twice

        def acc(seed: int, lr: float, name=name, task=task, options=options, runs=runs) -> float:
            if (seed, lr) not in runs:
                key = run_key(name, options, seed, lr)
                text = common.key_text(key)
                if text not in stored:
                    nonlocal trained
                    trained += 1
                    stored[text] = accuracy(task, options, seed, lr)
                    if not args.quick:
                        common.append_run(RUNS_FILE, {"key": key, "accuracy": stored[text]})
                runs[seed, lr] = stored[text]
            return runs[seed, lr]

        by_lr = {lr: [acc(s, lr) for s in seeds] for lr in grid}
        finders = []
        for s in seeds:
            sweep_options = {k: v for k, v in options.items() if k != "epochs"}
            finders.append(tlkit.lr_find(task, **sweep_options, **COMMON, seed=s))
            print(f"  {name} seed {s}: {finders[-1].describe()}", flush=True)
        means = {lr: common.mean_std(v) for lr, v in by_lr.items()}
        best = max(means, key=lambda lr: means[lr][0])
        near = {float(f"{best * f:.6g}"): f for f in JITTER}
        by_near = {lr: [acc(s, lr) for s in seeds] for lr in near}
        neighbourhood = common.mean_std(by_lr[best] + [x for v in by_near.values() for x in v])
        rows = [
            [f"lr={lr:g}" + (" (best of the grid)" if lr == best else ""), mean_pm_std(v)]
            + [" ".join(f"{x:.3f}" for x in v)]
            for lr, v in by_lr.items()
        ]
        rows += [
            [
                f"lr={lr:g} (the best x {near[lr]:g})",
                mean_pm_std(v),
                " ".join(f"{x:.3f}" for x in v),
            ]
            for lr, v in by_near.items()
        ]
        rows.append(
            [
                f"the best rate's neighbourhood ({len(JITTER) + 1} rates x {len(seeds)} seeds)",
                f"{neighbourhood[0]:.3f} ± {neighbourhood[1]:.3f}",
                "",
            ]
        )
        lines = []
        for method in METHODS:
            lrs = [getattr(f, method) for f in finders]
            picked = [acc(s, lr) for s, lr in zip(seeds, lrs)]
            pick_mean, _ = common.mean_std(picked)
            within = pick_mean >= means[best][0] - means[best][1]
            within_around = pick_mean >= neighbourhood[0] - neighbourhood[1]
            verdicts[method].append(f"{name}: {'yes' if within else 'no'}")
            around[method].append(f"{name}: {'yes' if within_around else 'no'}")
            gaps[method].append(pick_mean - means[best][0])
            label = f"lr finder, {method}" + (" (the default)" if method == DEFAULT_METHOD else "")
            rows.append(
                [
                    f"{label}: " + ", ".join(f"{lr:.2g}" for lr in lrs),
                    mean_pm_std(picked),
                    " ".join(f"{x:.3f}" for x in picked),
                ]
            )
            ratio = best / sorted(lrs)[len(lrs) // 2]
            where = f"{ratio:.1f}x below" if ratio >= 1 else f"{1 / ratio:.1f}x above"
            lines.append(
                f"- {method}: within one std of the grid's best (lr={best:g}): "
                f"**{'yes' if within else 'no'}** (accuracy {pick_mean:.3f} vs "
                f"{means[best][0]:.3f} ± {means[best][1]:.3f}, a gap of "
                f"{pick_mean - means[best][0]:+.3f}; the median pick is {where} the grid's best "
                f"rate); around it: **{'yes' if within_around else 'no'}** ("
                f"{neighbourhood[0]:.3f} ± {neighbourhood[1]:.3f})"
            )
        table = common.markdown_table(["learning rate", "test accuracy", "per seed"], rows)
        data = f"{per_class} labelled images per class; " if per_class else ""
        settings = data + ", ".join(f"{k}={v}" for k, v in options.items())
        sweeps = "; ".join(
            f"seed {s}: {len(f.lrs)} steps"
            + (f", diverged at {f.diverged_at:.2g}" if f.diverged_at else "")
            for s, f in zip(seeds, finders)
        )
        seconds = time.perf_counter() - started
        sections.append(
            f"### {name}\n\n{settings}. Sweeps: {sweeps}. {len(runs)} fits (trained or read from "
            f"the runs file) and {len(finders)} sweeps; this invocation took {seconds:.0f} s.\n\n{table}\n\n"
            + "\n".join(lines)
            + "\n"
        )
        print(table)
        print("\n".join(lines), flush=True)
    wall = time.perf_counter() - wall
    print(f"total wall time {wall:.0f} s")

    def held_out(task_verdicts: list[str]) -> str:
        mine = [v for v in task_verdicts if v.rsplit(": ", 1)[0] in HELD_OUT]
        return f"{sum(v.endswith('yes') for v in mine)} of {len(mine)}"

    overall = [
        f"| {m} | {sum(v.endswith('yes') for v in verdicts[m])} of {len(verdicts[m])} | "
        f"{sum(v.endswith('yes') for v in around[m])} of {len(around[m])} | "
        f"{held_out(verdicts[m])} / {held_out(around[m])} | "
        f"{sum(gaps[m]) / len(gaps[m]):+.3f} | {min(gaps[m]):+.3f} |"
        for m in METHODS
    ]
    summary_table = "\n".join(
        [
            "| pick | tasks within one std of the grid's best: at the rate | around it "
            "| held-out tasks: at / around | mean gap to the best | worst gap |",
            "| --- | --- | --- | --- | --- | --- |",
            *overall,
        ]
    )
    print(summary_table)
    path = common.results_path(args.results, "lr_finder", args.quick or bool(args.tasks))
    if path is not None:
        summary = "; ".join(f"{m}: {', '.join(v)}" for m, v in verdicts.items())
        summary_around = "; ".join(f"{m}: {', '.join(v)}" for m, v in around.items())
        body = "\n".join(
            [
                common.machine_block(info, common.command_line()),
                "",
                f"Seeds {', '.join(map(str, seeds))}. Every fit: "
                + ", ".join(f"{k}={v}" for k, v in COMMON.items() if k != "progress")
                + "; AdamW, cosine schedule with 5% warm-up. The finder sweeps the same "
                "configuration (1e-7 to 10, at most 100 steps; a fine-tune's unfrozen phase) on "
                "a copy of the model; each of its picks is trained. Pick within one std of "
                f"the grid's best, at the grid rate: {summary}; around it: {summary_around}. "
                f"This invocation took {wall:.0f} s and trained {trained} fits, reading the "
                f"rest from `{RUNS_FILE.name}`; times are not measurements.",
                "",
                "Over the tasks (gap: the pick's mean accuracy minus the grid's best mean):",
                "",
                summary_table,
                "",
                *sections,
            ]
        )
        common.write_run(path, body, quick=args.quick, file_title="Learning-rate finder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
