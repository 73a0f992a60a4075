"""Noisy labels on digits: robust losses against cross-entropy, and finding the wrong labels.

Task: ``tlkit.datasets.add_label_noise(tlkit.datasets.load("digits"), kind, 0.4, seed=s)`` --
the 1438 training digits with 40% of their labels corrupted, either ``"symmetric"`` (a wrong label
drawn uniformly from the other nine classes) or ``"pairflip"`` (class c labelled c+1). The
359-image test split keeps its clean labels, and so does every number below.

Every model is tlkit's ``small_cnn`` trained from scratch at digits' native 8x8 resolution
(``image_size=8``), ``mode="full"``, AdamW, lr 1e-2, batch 32, cosine schedule, 15 epochs: long
enough for cross-entropy to memorise many wrong labels. Seeds 0, 1, 2 (the seed draws the noise
and the training randomness; the train/test split is fixed).

1. Clean test accuracy after the last epoch for cross-entropy and each robust loss at its
   paper's default options, and for cross-entropy retrained (same 15 epochs) on the data cleaned
   by cross-validated confident learning: flagged samples removed, or relabelled with the fold
   models' most probable class, for the pruning rules "by_class" (tlkit's default), "by_pair"
   (the paper's prune-by-noise-rate) and "off_diagonal" (tlkit's first, looser rule). A
   reference row gives cross-entropy's accuracy at its best epoch -- chosen on the test set, so
   optimistic -- which shows what memorisation costs.
2. Precision / recall / F1 of the flags against the truth (``labels != clean_labels``):
   confident learning and small-loss on the final cross-entropy model, small-loss told the
   noise rate, confident learning on a cross-entropy model stopped after 3 epochs (in-sample),
   and cross-validated confident learning (4 folds, fold models trained 4 epochs) with each
   pruning rule applied to the *same* out-of-fold probabilities.
3. The estimated noise: confident learning's noise rate and noise matrix against the true ones.

The targets: symmetric noise, detection F1 >= 0.95 and clean accuracy after cleaning
>= 0.98; pair-flip no worse than before (the "off_diagonal" rows).

    .venv/bin/python benchmarks/noisy_labels.py              # full run (~15 min on 2 CPU cores)
    .venv/bin/python benchmarks/noisy_labels.py --quick      # smoke run, under a minute
    .venv/bin/python benchmarks/noisy_labels.py --threads 1  # on a CPU shared with other jobs
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import tlkit
from tlkit.cross_validation import cross_validated_probabilities
from tlkit.datasets import DomainPair, transition_matrix
from tlkit.label_issues import SuspiciousLabels

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

SEEDS = (0, 1, 2)
NOISES = (("symmetric", 0.4), ("pairflip", 0.4))
LOSSES = (
    ("cross-entropy", "cross_entropy"),
    ("label smoothing (0.1)", ("cross_entropy", {"label_smoothing": 0.1})),
    ("GCE (q=0.7)", "gce"),
    ("SCE (alpha=0.1, beta=1, A=-4)", "sce"),
    ("soft bootstrap (beta=0.95)", "bootstrap_soft"),
    ("hard bootstrap (beta=0.8)", "bootstrap_hard"),
)
FIT: dict[str, Any] = {
    "backbone": "small_cnn",
    "mode": "full",
    "image_size": 8,
    "lr": 1e-2,
    "batch_size": 32,
    "progress": False,
    "device": "cpu",
    "precision": "fp32",
}
EPOCHS, EARLY_EPOCHS, FOLDS, CV_EPOCHS = 15, 3, 4, 4
# (label in the tables, pruning rule, "remove" or "relabel") for cross-entropy on cleaned data
CLEANED = (
    ("CE after removing the CV flags, prune by class (default)", "by_class", "remove"),
    ("CE after relabelling the CV flags, prune by class", "by_class", "relabel"),
    ("CE after removing the CV flags, prune by pair", "by_pair", "remove"),
    ("CE after relabelling the CV flags, prune by pair", "by_pair", "relabel"),
    ("CE after removing the CV flags, off-diagonal (before issue 11)", "off_diagonal", "remove"),
)
RETRAIN = CLEANED[0][0]
RULES = ("by_class", "by_pair", "both", "off_diagonal", "argmax")
BEST = "(reference) cross-entropy at its best epoch, picked on the test set"
NOTES = """\
Reading the tables: a model trained to the end on the noisy labels has memorised most of them,
so confident learning and the loss threshold on it flag almost nothing; the same detectors on
out-of-sample probabilities (fold models) or on a model stopped after a few epochs find most
wrong labels under symmetric noise. Pair-flip noise at 40% is near its limit of 50%, past which
the images of class c carry the label c+1 more often than c and nothing can tell which is right:
a model is told "c" for 60% and "c+1" for 40% of the same kind of image, so every method does
worse there, the robust losses gain less and the detectors are less precise (the estimated noise
matrix then also puts mass on c+1 -> c). The pruning rules read the same out-of-fold
probabilities and differ in how many samples they flag and which: prune by class flags the
estimated number of errors of each class, the least confident first; prune by pair flags fewer
(its per-pair picks overlap); the off-diagonal rule only samples that another class is confident
about, and misses the wrong labels no class is sure of. The best-epoch row is picked on the test
set; it is not a usable method, only a measure of what memorisation costs.\
"""
DETECTORS = (
    "confident learning, final CE model",
    "small loss (loss > log K), final CE model",
    "small loss, told the noise rate, final CE model",
    f"confident learning, CE stopped at {EARLY_EPOCHS} epochs",
)
CV_DETECTORS = {
    rule: f"cross-validated ({FOLDS} folds x {CV_EPOCHS} epochs), prune {rule}"
    + (
        " (default)"
        if rule == "by_class"
        else " (before issue 11)"
        if rule == "off_diagonal"
        else ""
    )
    for rule in RULES
}


def make_task(kind: str, rate: float, seed: int, quick: bool) -> DomainPair:
    task = tlkit.datasets.add_label_noise(tlkit.datasets.load("digits"), kind, rate, seed=seed)
    if quick:
        task = replace(task, source=task.source.subset(torch.arange(300)))
    return task


def one_seed(kind: str, rate: float, seed: int, quick: bool) -> dict[str, Any]:
    """Accuracy per method and (precision, recall) per detector for one noisy task."""
    task = make_task(kind, rate, seed, quick)
    epochs = 2 if quick else EPOCHS
    acc: dict[str, float] = {}
    secs: dict[str, float] = {}
    found: dict[str, dict[str, float]] = {}
    for label, loss in LOSSES:
        start = time.perf_counter()
        run = tlkit.fit(task, loss=loss, epochs=epochs, seed=seed, **FIT)
        secs[label] = time.perf_counter() - start
        acc[label] = run.last["source_accuracy"]
        print(f"  {kind} seed {seed} {label}: {acc[label]:.3f} ({secs[label]:.0f} s)", flush=True)
        if loss == "cross_entropy":
            acc[BEST] = max(row["source_accuracy"] for row in run.history)
            found[DETECTORS[0]] = run.suspicious_labels().precision_recall(task)
            found[DETECTORS[1]] = run.suspicious_labels(method="small_loss").precision_recall(task)
            told = run.suspicious_labels(method="small_loss", expected_noise_rate=rate)
            found[DETECTORS[2]] = told.precision_recall(task)
    early = tlkit.fit(task, epochs=1 if quick else EARLY_EPOCHS, seed=seed, **FIT)
    found[DETECTORS[3]] = early.suspicious_labels().precision_recall(task)
    start = time.perf_counter()
    probs, idx = cross_validated_probabilities(
        task,
        folds=2 if quick else FOLDS,
        epochs=1 if quick else CV_EPOCHS,
        seed=seed,
        **FIT,
    )
    secs["cv"] = time.perf_counter() - start
    labels = task.source.labels[idx]
    issues = {
        rule: SuspiciousLabels.from_probabilities(probs, labels, prune=rule, indices=idx)
        for rule in RULES
    }
    for rule, det in CV_DETECTORS.items():
        found[det] = issues[rule].precision_recall(task)
    est = issues["by_class"].noise
    noise = {
        "estimated": est.noise_rate,
        "true": task.source.noise_rate,
        "matrix_error": float((est.noise_matrix - transition_matrix(kind, rate, 10)).abs().mean()),
    }
    kept_noise = {}
    for label, rule, action in CLEANED:
        start = time.perf_counter()
        cleaned = getattr(issues[rule], action)(task)
        acc[label] = tlkit.fit(cleaned, epochs=epochs, seed=seed, **FIT).last["source_accuracy"]
        secs[label] = time.perf_counter() - start
        kept_noise[label] = cleaned.source.noise_rate
    best = found[CV_DETECTORS["by_class"]]
    print(
        f"  {kind} seed {seed} CV flags (by class): precision {best['precision']:.3f} recall "
        f"{best['recall']:.3f} F1 {best['f1']:.3f} ({secs['cv']:.0f} s); retrained: "
        + ", ".join(f"{rule} {action} {acc[label]:.3f}" for label, rule, action in CLEANED),
        flush=True,
    )
    return {"acc": acc, "secs": secs, "found": found, "kept_noise": kept_noise, "noise": noise}


def pm(values: list[float]) -> str:
    """mean ± std over seeds; NaN (a precision with nothing flagged) is left out and counted."""
    finite = [v for v in values if v == v]
    if not finite:
        return "n/a (nothing flagged)"
    m, s = common.mean_std(finite)
    missing = len(values) - len(finite)
    return f"{m:.3f} ± {s:.3f}" + (f" ({missing} seed(s): nothing flagged)" if missing else "")


def tables(results: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    kinds = list(results)
    methods = [label for label, _ in LOSSES] + [label for label, _, _ in CLEANED] + [BEST]
    rows = []
    for method in methods:
        row = [method]
        for kind in kinds:
            vals = [r["acc"][method] for r in results[kind]]
            row += [pm(vals), " ".join(f"{v:.3f}" for v in vals)]
        secs = [r["secs"].get(method) for k in kinds for r in results[k]]
        secs = [s for s in secs if s is not None]
        row.append(f"{common.median(secs):.0f}" if secs else "")
        rows.append(row)
    headers = ["method"]
    for kind in kinds:
        headers += [f"{kind} 40%: test accuracy", "per seed"]
    headers.append("s per run")
    accuracy = common.markdown_table(headers, rows)
    rows = []
    for det in [*DETECTORS, *CV_DETECTORS.values()]:
        row = [det]
        for kind in kinds:
            found = [r["found"][det] for r in results[kind]]
            row += [
                pm([f["precision"] for f in found]),
                pm([f["recall"] for f in found]),
                pm([f["f1"] for f in found]),
                pm([f["flagged"] / f["scored"] for f in found]),
            ]
        rows.append(row)
    headers = ["detector"]
    for kind in kinds:
        headers += [f"{kind}: precision", "recall", "F1", "flagged fraction"]
    detection = common.markdown_table(headers, rows)
    rows = []
    for kind in kinds:
        noise = [r["noise"] for r in results[kind]]
        rows.append(
            [
                kind,
                pm([n["true"] for n in noise]),
                pm([n["estimated"] for n in noise]),
                pm([n["matrix_error"] for n in noise]),
            ]
        )
    headers = ["noise", "true noise rate", "estimated", "noise matrix: mean abs. error"]
    return accuracy, detection, common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds (default {SEEDS})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    parser.add_argument("--raw", help="also write the per-seed numbers to this JSON file")
    args = parser.parse_args(argv)
    common.setup_torch("cpu", threads=args.threads)
    info = common.machine_info("cpu")
    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else SEEDS)
    wall = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for kind, rate in NOISES:
        results[kind] = []
        for seed in seeds:
            results[kind].append(one_seed(kind, rate, seed, args.quick))
            if args.raw:  # after every seed, so that a crash keeps what was measured
                Path(args.raw).write_text(json.dumps(results, indent=1))
    wall = time.perf_counter() - wall
    accuracy, detection, noise = tables(results)
    kept = {k: pm([r["kept_noise"][RETRAIN] for r in v]) for k, v in results.items()}
    f1 = {
        k: pm([r["found"][CV_DETECTORS["by_class"]]["f1"] for r in v]) for k, v in results.items()
    }
    ce = {k: common.mean_std([r["acc"]["cross-entropy"] for r in v])[0] for k, v in results.items()}
    best = {
        k: max((lbl for lbl, _ in LOSSES[1:]), key=lambda m, v=v: sum(r["acc"][m] for r in v))
        for k, v in results.items()
    }
    verdict = "; ".join(
        f"{k}: best robust loss {best[k]} "
        f"{common.mean_std([r['acc'][best[k]] for r in v])[0]:.3f} vs cross-entropy {ce[k]:.3f}, "
        f"cross-validated confident learning (prune by class) F1 {f1[k]}, CE retrained after "
        f"removing its flags {pm([r['acc'][RETRAIN] for r in v])} (noise left {kept[k]})"
        for k, v in results.items()
    )
    print()
    print(accuracy)
    print()
    print(detection)
    print()
    print(noise)
    print()
    print(verdict)
    print(f"total wall time {wall:.0f} s")

    path = common.results_path(args.results, "noisy_labels", args.quick)
    if path is not None:
        settings = ", ".join(f"{k}={v}" for k, v in FIT.items() if k not in ("progress",))
        body = "\n".join(
            [
                common.machine_block(info, common.command_line()),
                "",
                f"digits (1438 training / 359 clean test images) with 40% label noise; seeds "
                f"{', '.join(map(str, seeds))}; `tlkit.fit({settings}, epochs={EPOCHS})`; every "
                "loss at its default options. Cross-validated confident learning: "
                f"`cross_validated_probabilities(task, folds={FOLDS}, epochs={CV_EPOCHS}, "
                "...same options)`, then each pruning rule on those probabilities; the cleaned "
                f"data is retrained with the same {EPOCHS} epochs. Accuracy is on the clean test "
                "split after the last epoch. Issue 11's targets (symmetric noise): detection "
                "F1 >= 0.95, clean accuracy after cleaning >= 0.98; pair-flip no worse than the "
                "off-diagonal rule it replaces.",
                "",
                "### Clean test accuracy",
                "",
                accuracy,
                "",
                "### Finding the mislabelled training samples",
                "",
                "Precision: share of the flagged samples whose label is truly wrong (chance = "
                "the noise rate, 0.4). Recall: share of the wrong labels that are flagged. "
                "Flagged fraction: flagged / training samples.",
                "",
                detection,
                "",
                "### The estimated noise",
                "",
                "Confident learning's estimate (from the cross-validated probabilities) against "
                "the realised noise rate and the transition matrix the noise was drawn from "
                "(`tlkit.datasets.transition_matrix(kind, 0.4, 10)`).",
                "",
                noise,
                "",
                f"**{verdict}.**",
                "",
                NOTES,
                "",
                f"Total wall time of the script: {wall:.0f} s.",
            ]
        )
        common.write_run(
            path,
            body,
            quick=args.quick,
            file_title="Noisy labels on digits: robust losses and label-issue detection",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
