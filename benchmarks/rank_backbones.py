"""Ranking backbones before training: do LogME and LEEP order candidates as fine-tuning does?

For each target task -- ``tlkit.datasets.few_labels(load(name, image_size=32), 10, seed=0)``, i.e.
100 labelled training images, evaluated on the name's test split -- every candidate backbone is

1. scored by ``tlkit.rank_backbones`` on the 100 labelled images (frozen features; LogME, and
   LEEP where the candidate has a source classifier), and
2. fine-tuned with ``tlkit.fit`` (seeds 0, 1, 2; test accuracy after the last epoch, mean).

Kendall's tau between each score and the fine-tuned accuracy measures how well the ranking
predicts fine-tuning; the table sets the ranking's wall time against fine-tuning them all.

Candidates (6 per target, all offline):

* ``small_cnn, random init`` -- no pretraining (LogME only).
* ``efficientnet_lite0, ImageNet`` -- the offline ImageNet weights at 64 px; LEEP reads its
  1000-way ImageNet classifier.
* ``small_cnn <- S, 8 epochs`` and ``small_cnn <- S, 1 epoch`` for each bundled source ``S``
  other than the target (a strong and a weak checkpoint), trained here on S's training split at
  32 px and saved with ``run.save``: candidates passed as checkpoint files. LEEP reads their
  10-way digit heads. The source trained on the target's own dataset is left out.

Fine-tuning recipes (fixed, not tuned per candidate): random init -- ``mode="full"``, 30
epochs, lr 0.03 (the transfer benchmark's small_cnn recipe); checkpoints -- ``mode="fine_tune"``
via ``backbone_weights=path``, 30 epochs, ``freeze_epochs=5``, lr 0.01, ``lr_spread=10``;
ImageNet -- ``mode="fine_tune"``, 25 epochs, ``freeze_epochs=5``, lr 0.01, ``lr_spread=10``
at 64 px (the transfer benchmark's recipe, at 64 instead of 96 px to fit the CPU budget). Batch
20. Note: digits-m is drawn from the same scikit-learn digits as ``digits``, so a checkpoint
trained on one has seen the other's digit shapes (with other backgrounds); that helps both the
scores and the fine-tuned accuracy alike.

    .venv/bin/python benchmarks/rank_backbones.py --threads 1          # full (~15 min, 2 cores)
    .venv/bin/python benchmarks/rank_backbones.py --quick --threads 1  # smoke run (~2 min)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

import tlkit
from tlkit.datasets import DomainPair

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

SOURCES = ("synth-digits", "digits-m", "digits")
TARGETS = ("digits-m", "digits", "synth-digits")
QUICK_TARGETS = ("digits-m", "digits")
SEEDS = (0, 1, 2)
IMAGE_SIZE = 32
LABELS_PER_CLASS = 10
PRETRAIN = {"strong": 8, "weak": 1}  # epochs of the source checkpoints
QUICK_PRETRAIN = {"strong": 2, "weak": 1}
NOTES = """\
Reading the tables: both scores put the candidate that fine-tunes best first on every target,
from one pass over 100 images, in 2-4 s against 66-83 s for fine-tuning the six candidates once
(one seed). Kendall's tau over six candidates moves in steps of 0.13; on digits the fine-tuned
accuracies of five candidates lie within 0.929-0.957, closer than their seed-to-seed spread,
so no score can order them and tau is low there. LEEP with ImageNet's 1000 source classes
estimates P(y | z) from only 100 images, which flatters it (its LEEP is the highest on
digits-m, where it also fine-tunes best, and second on digits, where it fine-tunes worst). The
LogME of a random init depends on the draw (rank_backbones seeds it: `seed=0`).\
"""
BASE = {"batch_size": 20, "progress": False, "device": "cpu", "precision": "fp32"}
RECIPES: dict[str, dict[str, Any]] = {
    "random": {"mode": "full", "lr": 3e-2, "lr_spread": 1.0, "epochs": 30},
    "checkpoint": {
        "mode": "fine_tune",
        "freeze_epochs": 5,
        "lr": 1e-2,
        "lr_spread": 10.0,
        "epochs": 30,
    },
    "imagenet": {
        "mode": "fine_tune",
        "freeze_epochs": 5,
        "lr": 1e-2,
        "lr_spread": 10.0,
        "epochs": 25,
        "image_size": 64,
    },
}
QUICK = {"epochs": 3, "freeze_epochs": 1}  # --quick: every recipe, ImageNet at 32 px


def pretrain(source: str, epochs: int, folder: Path, quick: bool) -> tuple[Path, float]:
    """A small_cnn trained on ``source``'s training split, saved with ``run.save``."""
    task = tlkit.datasets.load(source, image_size=IMAGE_SIZE)
    train = task.source
    if quick:
        train = train.subset(torch.arange(0, len(train), 4))
    start = time.perf_counter()
    run = tlkit.fit(
        DomainPair(source=train, name=source),
        "small_cnn",
        epochs=epochs,
        seed=0,
        mode="full",
        lr=1e-2,
        batch_size=64,
        progress=False,
        device="cpu",
        precision="fp32",
    )
    seconds = time.perf_counter() - start
    accuracy = run.evaluate(task.source_test)["accuracy"]
    path = run.save(folder / f"small_cnn-{source}-{epochs}ep.pt")
    print(
        f"  pretrained small_cnn on {source}, {epochs} epoch(s): {accuracy:.3f} ({seconds:.0f} s)"
    )
    return path, seconds


def candidates(
    target: str, checkpoints: dict[tuple[str, str], tuple[Path, int]], quick: bool
) -> dict[str, Any]:
    """Display name -> (rank_backbones candidate, recipe name, fit backbone, fit options)."""
    side = IMAGE_SIZE if quick else RECIPES["imagenet"]["image_size"]  # as fine_tune uses
    out: dict[str, Any] = {
        "small_cnn, random init": ("small_cnn", "random", "small_cnn", {}),
        "efficientnet_lite0, ImageNet": (
            ("efficientnet_lite0", {"input_size": side}),
            "imagenet",
            "efficientnet_lite0",
            {},
        ),
    }
    for source in SOURCES:
        if source == target:
            continue
        for strength in PRETRAIN:
            path, epochs = checkpoints[(source, strength)]
            name = f"small_cnn <- {source}, {epochs} epoch{'s' if epochs > 1 else ''}"
            out[name] = (path, "checkpoint", "small_cnn", {"backbone_weights": str(path)})
    return out


def fine_tune(
    train: DomainPair, test, recipe: str, backbone: str, extra: dict, seed: int, quick: bool
) -> tuple[float, float]:
    options = {**BASE, **RECIPES[recipe], **extra}
    if quick:
        options["epochs"] = QUICK["epochs"]
        if "freeze_epochs" in options:
            options["freeze_epochs"] = QUICK["freeze_epochs"]
        if recipe == "imagenet":
            options["image_size"] = IMAGE_SIZE
    epochs = options.pop("epochs")
    start = time.perf_counter()
    run = tlkit.fit(train, backbone, epochs=epochs, seed=seed, **options)
    accuracy = run.evaluate(test)["accuracy"]
    return accuracy, time.perf_counter() - start


def tau(x: list[float], y: list[float]) -> tuple[float, int]:
    pairs = [(a, b) for a, b in zip(x, y) if a == a and b == b]
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    value = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return float(value), len(pairs)


def one_target(
    target: str,
    checkpoints: dict[tuple[str, str], tuple[Path, int]],
    seeds: tuple[int, ...],
    quick: bool,
) -> dict[str, Any]:
    pair = tlkit.datasets.few_labels(
        tlkit.datasets.load(target, image_size=IMAGE_SIZE), LABELS_PER_CLASS, seed=0
    )
    train = replace(pair, target=None, target_test=None, source_test=None)
    test = pair.source_test
    cands = candidates(target, checkpoints, quick)
    start = time.perf_counter()
    ranking = tlkit.rank_backbones(
        train, {name: c[0] for name, c in cands.items()}, progress=False, device="cpu"
    )
    rank_seconds = time.perf_counter() - start
    print(ranking)
    rows = []
    for name, (_, recipe, backbone, extra) in cands.items():
        accs, secs = [], []
        for seed in seeds:
            acc, sec = fine_tune(train, test, recipe, backbone, extra, seed, quick)
            accs.append(acc)
            secs.append(sec)
        row = ranking[name]
        rows.append(
            {
                "candidate": name,
                "logme": row["logme"],
                "leep": row["leep"],
                "rank_seconds": row["seconds"],
                "accuracy": accs,
                "fit_seconds": secs,
            }
        )
        print(
            f"  {target} {name}: LogME {row['logme']:.3f} LEEP {row['leep']:.3f} -> fine-tuned "
            f"{' '.join(f'{a:.3f}' for a in accs)} ({sum(secs):.0f} s)",
            flush=True,
        )
    mean_acc = [common.mean_std(r["accuracy"])[0] for r in rows]
    summary = {"target": target, "rank_seconds": rank_seconds}
    for metric in ("logme", "leep"):
        scores = [r[metric] for r in rows]
        summary[f"tau_{metric}"], summary[f"n_{metric}"] = tau(scores, mean_acc)
        finite = [(s, a) for s, a in zip(scores, mean_acc) if s == s]
        summary[f"top_{metric}"] = max(finite)[1] if finite else float("nan")
    summary["best_accuracy"] = max(mean_acc)
    summary["fit_seconds"] = sum(common.mean_std(r["fit_seconds"])[0] for r in rows)
    return {"rows": rows, "summary": summary}


def tables(results: dict[str, Any], seeds: tuple[int, ...]) -> tuple[str, list[str]]:
    rows = []
    for res in results.values():
        s = res["summary"]
        speedup = s["fit_seconds"] / s["rank_seconds"] if s["rank_seconds"] else float("nan")
        rows.append(
            [
                s["target"],
                len(res["rows"]),
                f"{s['tau_logme']:.2f}",
                f"{s['tau_leep']:.2f} (n={s['n_leep']})",
                f"{s['top_logme']:.3f}",
                f"{s['top_leep']:.3f}",
                f"{s['best_accuracy']:.3f}",
                f"{s['rank_seconds']:.1f}",
                f"{s['fit_seconds']:.0f}",
                f"{speedup:.0f}x",
            ]
        )
    summary = common.markdown_table(
        [
            "target (10 labels/class)",
            "candidates",
            "Kendall tau, LogME",
            "Kendall tau, LEEP",
            "accuracy of LogME's pick",
            "accuracy of LEEP's pick",
            "best accuracy",
            "ranking s",
            "fine-tuning all s (one seed)",
            "fine-tune / rank",
        ],
        rows,
    )
    per_target = []
    for target, res in results.items():
        body = []
        for r in sorted(res["rows"], key=lambda r: -common.mean_std(r["accuracy"])[0]):
            m, sd = common.mean_std(r["accuracy"])
            body.append(
                [
                    r["candidate"],
                    "n/a" if r["logme"] != r["logme"] else f"{r['logme']:.3f}",
                    "n/a" if r["leep"] != r["leep"] else f"{r['leep']:.3f}",
                    f"{m:.3f} ± {sd:.3f}",
                    " ".join(f"{a:.3f}" for a in r["accuracy"]),
                    f"{r['rank_seconds']:.1f}",
                    f"{common.mean_std(r['fit_seconds'])[0]:.0f}",
                ]
            )
        per_target.append(
            f"#### {target}\n\n"
            + common.markdown_table(
                [
                    "candidate",
                    "LogME",
                    "LEEP",
                    f"fine-tuned accuracy (seeds {', '.join(map(str, seeds))})",
                    "per seed",
                    "rank s",
                    "fit s",
                ],
                body,
            )
        )
    return summary, per_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (~2 min)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"fine-tuning seeds (default {SEEDS})")
    parser.add_argument("--targets", nargs="+", help=f"target datasets (default {TARGETS})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    parser.add_argument("--raw", help="also write the per-candidate numbers to this JSON file")
    args = parser.parse_args(argv)
    common.setup_torch("cpu", threads=args.threads)
    info = common.machine_info("cpu")
    seeds = tuple(args.seeds) if args.seeds else ((0,) if args.quick else SEEDS)
    targets = tuple(args.targets) if args.targets else (QUICK_TARGETS if args.quick else TARGETS)
    wall = time.perf_counter()
    results: dict[str, Any] = {}
    pretrain_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="tlkit-rank-") as tmp:
        checkpoints = {}
        for source in SOURCES:
            if all(t == source for t in targets):
                continue
            for strength, epochs in (QUICK_PRETRAIN if args.quick else PRETRAIN).items():
                path, sec = pretrain(source, epochs, Path(tmp), args.quick)
                checkpoints[(source, strength)] = (path, epochs)
                pretrain_seconds += sec
        for target in targets:
            results[target] = one_target(target, checkpoints, seeds, args.quick)
            if args.raw:
                Path(args.raw).write_text(json.dumps(results, indent=1))
    wall = time.perf_counter() - wall
    summary, per_target = tables(results, seeds)
    taus = {k: v["summary"]["tau_logme"] for k, v in results.items()}
    verdict = "; ".join(
        f"{k}: LogME tau {taus[k]:.2f}, LEEP tau {v['summary']['tau_leep']:.2f}, ranking "
        f"{v['summary']['rank_seconds']:.0f} s vs fine-tuning all "
        f"{v['summary']['fit_seconds']:.0f} s"
        for k, v in results.items()
    )
    mean_tau = sum(t for t in taus.values() if t == t) / max(1, sum(t == t for t in taus.values()))
    print()
    print(summary)
    for table in per_target:
        print()
        print(table)
    print()
    print(verdict)
    print(
        f"total wall time {wall:.0f} s (pretraining the source checkpoints {pretrain_seconds:.0f} s)"
    )

    path = common.results_path(args.results, "rank_backbones", args.quick)
    if path is not None:
        body = "\n".join(
            [
                common.machine_block(info, common.command_line()),
                "",
                f"Targets: `few_labels(load(name, image_size={IMAGE_SIZE}), {LABELS_PER_CLASS}, "
                "seed=0)` -- 100 labelled training images, test accuracy on the name's test "
                f"split. Ranking: `tlkit.rank_backbones` on the 100 labelled images. Fine-tuning: "
                f"`tlkit.fit`, seeds {', '.join(map(str, seeds))}, recipes "
                + "; ".join(
                    f"{k}: " + ", ".join(f"{o}={v}" for o, v in r.items())
                    for k, r in RECIPES.items()
                )
                + f" (batch {BASE['batch_size']}). Source checkpoints: small_cnn trained "
                f"{' and '.join(str(e) for e in PRETRAIN.values())} epochs on each source's "
                f"training split ({pretrain_seconds:.0f} s in all, counted in neither column). "
                "Kendall's tau (tau-b) between a score and the mean fine-tuned accuracy; LEEP "
                "only over the candidates with a source classifier (n).",
                "",
                "### Summary",
                "",
                summary,
                "",
                "### Per target: scores and fine-tuned accuracy (best first)",
                "",
                *[t + "\n" for t in per_target],
                f"**{verdict}; mean LogME tau {mean_tau:.2f}.**",
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
            file_title="Ranking backbones before training: LogME and LEEP vs fine-tuning",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
