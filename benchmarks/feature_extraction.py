"""Feature extraction: cached backbone features against recomputing the frozen backbone each epoch.

``tlkit.fit(mode="feature_extraction")`` runs the frozen backbone once over the training and test
images and then trains only the head on the cached features. The baseline recomputes the frozen
backbone on every batch of every epoch, which is what a loop without the cache does. Three runs on
the same data, model (EfficientNet-Lite0, ImageNet weights) and options:

* ``tlkit cached``: ``tlkit.fit(mode="feature_extraction")`` as a user calls it.
* ``tlkit recompute``: the same fit with a do-nothing regularizer declaring ``needs_images = True``
  (a strategy that looks at the inputs, as AdaBN or FixMatch do), which turns the cache off: each
  step runs the frozen backbone (no gradients, BatchNorm in eval mode) and each epoch's evaluation
  runs the whole model on the test images.
* ``hand recompute``: a hand-written PyTorch loop doing the same (frozen backbone under
  ``no_grad`` in eval mode, AdamW on the head, per-epoch test evaluation), as a check that the
  tlkit recompute path is not itself slow.

Time of an epoch = training steps + that epoch's test evaluation, from the end of one epoch to the
end of the next (an observer on ``tlkit_on_epoch_end`` timestamps it). The first epoch of the cached
run also pays for computing the cache, so it is reported apart; the ratio uses the median epoch
after the first. Target: recompute / cached >= 10.

    .venv/bin/python benchmarks/feature_extraction.py           # full run (~5 min on 2 CPU cores)
    .venv/bin/python benchmarks/feature_extraction.py --quick   # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

import tlkit
from tlkit.datasets import DomainPair
from tlkit.engine.batch_plan import batch_sizes, split

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

TARGET = 10.0


@dataclass
class Setup:
    image_size: int = 96
    train_samples: int = 0  # 0 = the whole training split (1438 images)
    test_samples: int = 0  # 0 = the whole test split (359 images)
    cached_epochs: int = 10
    recompute_epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-2
    backbone: str = "efficientnet_lite0"


FULL = Setup()
QUICK = Setup(
    image_size=32, train_samples=128, test_samples=64, cached_epochs=3, recompute_epochs=2
)


class NeedsImages:
    """A regularizer that adds nothing but declares that it looks at the inputs: with it the
    trainer cannot train the head on cached features."""

    name, family = "bench_needs_images", "regularizer"
    needs_images = True

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step: Any) -> dict[str, Any]:
        return {}


class EpochClock:
    """An observer that timestamps the start of the fit and the end of every epoch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.cached: list[bool] = []
        self.accuracy: list[float] = []

    @tlkit.hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self.stamps = [time.perf_counter()]

    @tlkit.hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.stamps.append(time.perf_counter())
        self.cached.append(bool(trainer.net.cached))
        self.accuracy.append(float(metrics["source_accuracy"]))

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def make_data(setup: Setup) -> DomainPair:
    pair = tlkit.datasets.load("digits-m")
    if setup.train_samples:
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(pair.source), generator=g)[: setup.train_samples].sort().values
        pair = replace(pair, source=pair.source.subset(idx))
    if setup.test_samples:
        pair = replace(pair, source_test=pair.source_test.subset(torch.arange(setup.test_samples)))
    return pair


def fit_tlkit(setup: Setup, pair: DomainPair, model, *, recompute: bool) -> dict:
    clock = EpochClock()
    if recompute and "bench_needs_images" not in {s.name for s in tlkit.strategies("regularizer")}:
        tlkit.register(NeedsImages)
    start = time.perf_counter()
    run = tlkit.fit(
        pair,
        model=model,
        epochs=setup.recompute_epochs if recompute else setup.cached_epochs,
        mode="feature_extraction",
        batch_size=setup.batch_size,
        lr=setup.lr,
        precision="fp32",
        device="cpu",
        seed=0,
        progress=False,
        observers=[clock],
        regularize="bench_needs_images" if recompute else None,
    )
    total = time.perf_counter() - start
    if any(clock.cached) == recompute or not all(c == clock.cached[0] for c in clock.cached):
        raise RuntimeError(f"feature cache state {clock.cached} is not what was asked for")
    return {
        "epochs": clock.epochs(),
        "total": total,
        "accuracy": clock.accuracy,
        "final": run.last["source_accuracy"],
    }


def fit_hand(setup: Setup, pair: DomainPair, model) -> dict:
    """Frozen backbone recomputed on every batch; only the head learns."""
    start = time.perf_counter()
    torch.manual_seed(0)
    images, labels = pair.source.images, pair.source.labels
    test_images, test_labels = pair.source_test.images, pair.source_test.clean_labels
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=setup.lr, weight_decay=1e-2)
    n, bs = len(labels), setup.batch_size
    stamps, accuracy = [time.perf_counter()], []
    for _ in range(setup.recompute_epochs):
        model.backbone.eval()
        model.head.train()
        order = torch.randperm(n)
        for idx in split(order, batch_sizes(n, bs)):  # the engine's batches: every sample trains
            with torch.no_grad():
                features = model.backbone(model.prepare(images[idx].float().div_(255)))
            loss = F.cross_entropy(model.head(features), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(test_images), 256):
                out = model(test_images[s : s + 256].float().div_(255))
                correct += int((out.argmax(1) == test_labels[s : s + 256]).sum())
        accuracy.append(correct / len(test_images))
        stamps.append(time.perf_counter())
    return {
        "epochs": [b - a for a, b in zip(stamps, stamps[1:])],
        "total": time.perf_counter() - start,
        "accuracy": accuracy,
        "final": accuracy[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (a few seconds)")
    parser.add_argument("--no-hand", action="store_true", help="skip the hand-written loop")
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    args = parser.parse_args(argv)
    common.setup_torch("cpu")
    setup = QUICK if args.quick else FULL
    info = common.machine_info("cpu")
    wall = time.perf_counter()
    pair = make_data(setup)
    base = tlkit.backbones.create_model(setup.backbone, 10, input_size=setup.image_size)

    runs = {}
    # Interleave: cached, recompute, hand (each from the same initial weights).
    runs["tlkit cached"] = fit_tlkit(setup, pair, copy.deepcopy(base), recompute=False)
    print(
        "  tlkit cached epochs (s):", " ".join(f"{t:.3f}" for t in runs["tlkit cached"]["epochs"])
    )
    runs["tlkit recompute"] = fit_tlkit(setup, pair, copy.deepcopy(base), recompute=True)
    print(
        "  tlkit recompute epochs (s):",
        " ".join(f"{t:.2f}" for t in runs["tlkit recompute"]["epochs"]),
    )
    if not args.no_hand:
        runs["hand recompute"] = fit_hand(setup, pair, copy.deepcopy(base))
        print(
            "  hand recompute epochs (s):",
            " ".join(f"{t:.2f}" for t in runs["hand recompute"]["epochs"]),
        )
    wall = time.perf_counter() - wall

    cached_epoch = common.median(runs["tlkit cached"]["epochs"][1:])
    rows = []
    for name, res in runs.items():
        later = common.median(res["epochs"][1:])
        k = min(len(res["accuracy"]), setup.recompute_epochs)
        rows.append(
            [
                name,
                str(len(res["epochs"])),
                f"{res['epochs'][0]:.3f}",
                f"{later:.4f}" if later < 1 else f"{later:.2f}",
                f"{later / cached_epoch:.0f}x" if name != "tlkit cached" else "1x",
                f"{res['total']:.1f}",
                f"{res['accuracy'][k - 1]:.3f}",
            ]
        )
    ratio = common.median(runs["tlkit recompute"]["epochs"][1:]) / cached_epoch
    headers = [
        "run",
        "epochs",
        "first epoch s",
        "median later epoch s",
        "later epoch vs cached",
        "whole fit s",
        f"test acc after epoch {setup.recompute_epochs}",
    ]
    table = common.markdown_table(headers, rows)
    verdict = f"recompute / cached per later epoch = {ratio:.0f}x (target >= {TARGET:.0f}x: " + (
        "met)" if ratio >= TARGET else "NOT met)"
    )
    n_train, n_test = len(pair.source), len(pair.source_test)
    setting = (
        f"{setup.backbone} (ImageNet weights) at {setup.image_size} px on digits-m "
        f"({n_train} training / {n_test} test images), batch {setup.batch_size}, "
        f"AdamW lr {setup.lr}, fp32, CPU."
    )
    print()
    print(setting)
    print(table)
    print(verdict)
    print(f"total wall time {wall:.0f} s")

    path = common.results_path(args.results, "feature_extraction", args.quick)
    if path is not None:
        body = "\n".join(
            [
                common.machine_block(info, common.command_line()),
                "",
                setting,
                "",
                table,
                "",
                f"**{verdict}**",
                "",
                f"Total wall time of the script: {wall:.0f} s.",
                "",
                "An epoch is the time from one epoch's end to the next (training steps plus that "
                "epoch's test evaluation); the cached run's first epoch includes computing the "
                "cache. The test accuracies are a sanity check only: the frozen features are the "
                "same, but the cosine learning-rate schedule spans each run's own number of epochs "
                "(the cached run is longer), and the hand loop draws a different data order.",
            ]
        )
        common.write_run(
            path,
            body,
            quick=args.quick,
            file_title="Feature extraction: cached features vs recomputing the frozen backbone",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
