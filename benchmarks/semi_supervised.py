"""Does pseudo-labelling pay on digits with 5 labels per class?

Task: ``tlkit.datasets.few_labels(tlkit.datasets.load("digits"), 5, seed=s)`` -- 50 labelled
training images (5 per digit) and the other 1388 training images as the unlabelled target pool,
evaluated on the 359-image digits test split. Methods, all with the same network, optimiser,
schedule and number of steps:

* ``supervised only``: the 50 labelled images (the unlabelled pool is never seen).
* ``threshold``: pseudo-labels where the model is >= 95% confident (Lee, 2013).
* ``fixmatch``: confident labels from a weak view supervise a strong view (Sohn et al., 2020);
  once with an unlabelled batch the size of the labelled one, once 7 times larger as in the
  paper (``target_batch_ratio=7``).
* ``mean_teacher``: consistency with an EMA teacher (Tarvainen & Valpola, 2017).

Each runs with seeds 0, 1, 2 (the seed picks the labelled subset and the training randomness);
the table gives mean +- std of test accuracy after the last step, and, for the pseudo-labelling
methods, the mask rate and pseudo-label accuracy averaged over the last epoch. The test split is
evaluated once, after training (``run.evaluate``), rather than after each of the 200 short epochs.

Every strategy runs at its default options. The shared settings (``FIT``, ``EPOCHS``) are the
small-CNN settings of tlkit's tests at 16 px, long enough for the pseudo-labelling methods to
use the pool; they were tried on seed 0 while developing and are not tuned per method.

    .venv/bin/python benchmarks/semi_supervised.py              # full run
    .venv/bin/python benchmarks/semi_supervised.py --threads 1  # what the results file used
    .venv/bin/python benchmarks/semi_supervised.py --quick      # smoke run, a few seconds

A full run costs about 4 minutes of CPU time (12 fits); on a shared 2-core machine under load it
took 8 to 15 minutes of wall time. On that busy machine one torch thread ran these small networks
several times faster than two (hence ``--threads 1``); results do not depend on it.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from typing import Any

import torch

import tlkit
from tlkit.datasets import Domain, DomainPair

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

LABELS_PER_CLASS = 5
SEEDS = (0, 1, 2)
EPOCHS = 200  # 50 labelled images / batch 10 = 5 steps an epoch: 1000 steps
FIT: dict[str, Any] = {
    "backbone": "small_cnn",
    "mode": "full",
    "image_size": 16,  # 8x8 digits upsampled; 32 px costs 4x more for no gain here
    "batch_size": 10,  # labelled and unlabelled batches alike
    "lr": 3e-3,
    "augment": True,  # random translation of the labelled batch, for every method
    "device": "cpu",
    "precision": "fp32",
    "progress": False,
}
#: name -> (pseudo_label strategy, extra fit options)
METHODS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "supervised only": (None, {}),
    "threshold": ("threshold", {}),
    "fixmatch": ("fixmatch", {}),
    # the paper's unlabelled batch: 7 times the labelled one (FixMatch's mu)
    "fixmatch, target_batch_ratio=7": ("fixmatch", {"target_batch_ratio": 7}),
    "mean_teacher": ("mean_teacher", {}),
}


def task(seed: int) -> tuple[DomainPair, Domain]:
    """(what fit trains on, the test split): labelled source + unlabelled pool, no test in fit."""
    pair = tlkit.datasets.few_labels(tlkit.datasets.load("digits"), LABELS_PER_CLASS, seed=seed)
    return replace(pair, source_test=None, target_test=None), pair.source_test


def run_one(
    strategy: str | None,
    data: DomainPair,
    test: Domain,
    seed: int,
    epochs: int,
    extra: dict[str, Any] | None = None,
) -> dict:
    if strategy is None:
        data = replace(data, target=None)  # supervised only: the pool is not used at all
    start, cpu = time.perf_counter(), time.process_time()
    run = tlkit.fit(data, epochs=epochs, seed=seed, pseudo_label=strategy, **FIT, **(extra or {}))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    last = run.last
    return {
        "accuracy": run.evaluate(test)["accuracy"],
        "mask_rate": last.get("mask_rate", math.nan),
        "pl_accuracy": last.get("pseudo_label_accuracy", math.nan),
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


def mean_pm_std(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    m, s = common.mean_std(values)
    return f"{m:.3f} ± {s:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (a few seconds)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds (default {SEEDS})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    args = parser.parse_args(argv)
    common.setup_torch("cpu", threads=args.threads)
    info = common.machine_info("cpu")
    wall, cpu = time.perf_counter(), time.process_time()

    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else SEEDS)
    epochs = 2 if args.quick else EPOCHS
    results: dict[str, list[dict]] = {name: [] for name in METHODS}
    for seed in seeds:
        data, test = task(seed)
        if args.quick:
            data = replace(data, target=data.target.subset(torch.arange(200)))
            test = test.subset(torch.arange(64))
        for name, (strategy, extra) in METHODS.items():
            res = run_one(strategy, data, test, seed, epochs, extra)
            results[name].append(res)
            print(
                f"  seed {seed} {name}: test acc {res['accuracy']:.3f}, mask rate "
                f"{res['mask_rate']:.2f}, pseudo-label acc {res['pl_accuracy']:.3f} "
                f"({res['seconds']:.0f} s)",
                flush=True,
            )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    rows = []
    for name in METHODS:
        rs = results[name]
        rows.append(
            [
                name,
                mean_pm_std([r["accuracy"] for r in rs]),
                " ".join(f"{r['accuracy']:.3f}" for r in rs),
                mean_pm_std([r["mask_rate"] for r in rs]),
                mean_pm_std([r["pl_accuracy"] for r in rs]),
                f"{common.median([r['seconds'] for r in rs]):.0f}",
                f"{common.median([r['cpu_seconds'] for r in rs]):.0f}",
            ]
        )
    headers = [
        "method",
        "test accuracy (mean ± std)",
        "per seed",
        "final mask rate",
        "final pseudo-label accuracy",
        "wall s per run",
        "CPU s per run",
    ]
    table = common.markdown_table(headers, rows)
    print()
    print(table)
    print(f"total wall time {wall:.0f} s, CPU time {cpu:.0f} s")

    path = common.results_path(args.results, "semi_supervised", args.quick)
    if path is not None:
        settings = ", ".join(f"{k}={v}" for k, v in FIT.items() if k != "progress")
        body = "\n".join(
            [
                common.machine_block(info, common.command_line()),
                "",
                f"digits, {LABELS_PER_CLASS} labels per class (50 labelled training images, "
                f"1388 unlabelled), seeds {', '.join(map(str, seeds))}; accuracy on the "
                f"359-image test split after {epochs} epochs ({epochs * 5} steps). Settings: "
                f"{settings}; AdamW, cosine schedule with 5% warm-up, weight decay 0.01. "
                "Strategies at their default options.",
                "",
                table,
                "",
                "Mask rate: fraction of unlabelled samples given a non-zero weight; pseudo-label "
                "accuracy: of those samples, how many pseudo-labels match the hidden true label "
                "(both averaged over the last epoch). For mean_teacher every sample is used, and "
                "the accuracy is that of the teacher's argmax on the unlabelled batch.",
                "",
                f"Total wall time of the script: {wall:.0f} s; CPU time {cpu:.0f} s (with "
                f"{torch.get_num_threads()} torch thread(s), CPU time is roughly the wall time "
                "on an otherwise idle machine; the wall time includes waiting for the CPU when "
                "other jobs share it, see the load average above).",
            ]
        )
        common.write_run(
            path,
            body,
            quick=args.quick,
            file_title="Semi-supervised learning on digits with 5 labels per class",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
