"""Engine overhead: ``tlkit.fit`` against a hand-written PyTorch loop doing the same work.

Both sides train the same model (one ``tlkit.backbones.create_model`` built with a fixed seed,
then deep-copied, so both start from identical weights) on the same data (the training split of
the bundled ``digits-m``, uint8 in memory), with AdamW, the same batch size, the same number of
optimiser steps and epochs, fp32, ``mode="full"`` (every layer trained), ``progress=False``.

One step, on both sides (in-memory data): index a shuffled batch of uint8 images -> ``.float().div_(255)`` ->
``model.prepare`` (resize to the backbone's input size, normalise) -> backbone -> head ->
cross-entropy -> zero_grad -> backward -> AdamW step; images and weights channels-last on both
sides (tlkit's default for image data; ``--nchw`` runs both sides in NCHW). After every epoch
both evaluate the whole test split (batches of 256, ``no_grad``, eval mode) and compute its
accuracy.

**The folder path** (``photos``: a :func:`tlkit.testing.make_photo_folder` folder of JPEGs and
PNGs, 3 classes, listed with ``from_folder`` and split 80/20): both sides read the same files
through the same per-sample pipeline, tlkit's own (``train_transform``: reduced-size JPEG decoding,
RandomResizedCrop and flip; ``eval_transform`` for the test split), so what is compared is the
engine around it, not the decoder. tlkit trains with ``augment="photos"``; the hand loop feeds
``Domain.dataset(train_transform(size))`` to a plain ``DataLoader`` (shuffled, ``collate``).
Both decode in the main process (``num_workers=0``): worker processes of the two sides would
compete for the same two cores and the pairs would no longer be measured under the same load.

What tlkit does on top (the overhead being measured): the pluggy hooks (loss strategy, step and
epoch observers, stop check), the seeded per-step RNG, the learning-rate schedule (cosine with
warm-up, written into every parameter group each step), discriminative parameter groups (AdamW
over several groups instead of two), loss bookkeeping (running sums, a host sync every
``log_every`` steps, the finite-loss check) and the history row (confusion matrix, per-class
accuracy). The hand loop uses a constant learning rate and two AdamW parameter groups, weight
decay 0.01 on weights and none on biases and norm parameters -- the per-parameter optimiser work
of tlkit's groups, so that the comparison is of the loops, not of the optimiser recipe.

How it is timed (robust to a shared, noisy machine): the two loops run in lock-step in one
process. An observer registered with ``tlkit.fit(observers=[...])`` runs one hand-written step
right after each tlkit step, and the hand-written evaluation right after tlkit's epoch end. Each
tlkit step is timed from the end of the previous hand step to the step-end hook, each hand step
inside the hook; so the two are measured within milliseconds of each other, under the same load.
The hand loop draws its batches from its own ``torch.Generator`` and touches no global state, so
it does not change what tlkit does (one observer hook call per step and epoch is tlkit's own cost).

Reported per model: median step time of each side and the median of the per-step (paired)
ratios; the same for the epoch ends (tlkit: log flush, evaluation, history row; hand: evaluation).
The headline is the amortised ratio built from the paired ratios,
``(r_step * h_step + r_end * h_end / steps_per_epoch) / (h_step + h_end / steps_per_epoch)``
with ``r`` the median paired ratios and ``h`` the hand loop's median times, so a load change
between two pairs cannot move it. Also shown: the ratio of the two sides' amortised medians
(unpaired) and the ratio of summed times (every interval, spikes included). Target: <= 1.05. When
it misses, one plain tlkit fit is profiled with cProfile and the report shows where the time goes.

    .venv/bin/python benchmarks/engine_overhead.py           # full run (~6 min on 2 idle cores)
    .venv/bin/python benchmarks/engine_overhead.py --models photos  # only the folder path
    .venv/bin/python benchmarks/engine_overhead.py --quick   # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import time
from dataclasses import dataclass, replace
from pathlib import Path
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

TARGET = 1.05


@dataclass
class Case:
    backbone: str
    image_size: int
    train_samples: int  # 0 = the whole training split (1438 images)
    epochs: int
    repeats: int  # lock-step fits; pairs are pooled over them
    batch_size: int = 64
    lr: float = 1e-3
    channels_last: bool = True  # both sides: NHWC images and weights (tlkit's default for images)
    test_samples: int = 0  # 0 = the whole test split (359 images)
    photos: int = 0  # > 0: a folder of this many photos (the folder path) instead of digits-m
    name: str = ""  # the --models name and results key (default: the backbone)

    @property
    def key(self) -> str:
        return self.name or self.backbone

    @property
    def label(self) -> str:
        layout = "" if self.channels_last else ", NCHW"
        where = f", folder of {self.photos} photos" if self.photos else ""
        return f"{self.backbone} @ {self.image_size}px{where}{layout}"


FULL_CASES = [
    Case("small_cnn", 32, train_samples=0, epochs=4, repeats=2),
    Case("efficientnet_lite0", 64, train_samples=1280, epochs=2, repeats=1),
    Case("efficientnet_lite0", 224, train_samples=640, epochs=1, repeats=1, batch_size=32,
         test_samples=128, name="efficientnet_lite0-224"),
    Case("small_cnn", 64, train_samples=0, epochs=5, repeats=2, batch_size=32, photos=150,
         name="photos"),
]  # fmt: skip
QUICK_CASES = [
    Case("small_cnn", 32, train_samples=64, epochs=2, repeats=1, batch_size=16, test_samples=32),
    Case("small_cnn", 32, train_samples=0, epochs=2, repeats=1, batch_size=8, photos=24,
         name="photos"),
]  # fmt: skip


#: The folder path's photos: phone-size JPEGs with a few PNGs (decoding is real work, but not
#: so much that the engine's share of a step cannot be seen).
PHOTO_SIZES = ((1024, 768), (1280, 960), (800, 600))


def photo_folder(n: int) -> Path:
    """``n`` photos (a multiple of 3) in 3 class folders, written once under the benchmarks'
    cache folder."""
    from tlkit.testing import make_photo_folder

    root = common.cache_dir() / f"overhead-photos-{n}"
    if not (root / ".complete").exists():
        make_photo_folder(root, classes=3, per_class=n // 3, sizes=PHOTO_SIZES, png_every=10,
                          png_size=(800, 600), corrupt=0, csv=False, seed=0)  # fmt: skip
        (root / ".complete").write_text(str(n))
    return root


def make_data(case: Case, seed: int) -> DomainPair:
    if case.photos:
        folder = tlkit.datasets.from_folder(photo_folder(case.photos), progress=False)
        train, test = folder.split(0.2, seed=seed)
        return DomainPair(train, test, name="photos")
    pair = tlkit.datasets.load("digits-m")
    if case.train_samples and case.train_samples < len(pair.source):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(pair.source), generator=g)[: case.train_samples].sort().values
        pair = replace(pair, source=pair.source.subset(idx))
    if case.test_samples:
        pair = replace(pair, source_test=pair.source_test.subset(torch.arange(case.test_samples)))
    return pair


def build_model(case: Case, seed: int) -> tlkit.backbones.TransferModel:
    torch.manual_seed(seed)
    classes = 3 if case.photos else 10
    return tlkit.backbones.create_model(case.backbone, classes, input_size=case.image_size)


def fit_tlkit(case: Case, pair: DomainPair, model, seed: int, observers=()) -> Any:
    return tlkit.fit(
        pair,
        model=model,
        epochs=case.epochs,
        mode="full",
        batch_size=case.batch_size,
        lr=case.lr,
        optimizer="adamw",
        precision="fp32",
        device="cpu",
        seed=seed,
        channels_last=case.channels_last,
        progress=False,
        observers=observers,
        **({"augment": "photos", "image_size": case.image_size, "num_workers": 0}
           if case.photos else {}),
    )  # fmt: skip


class HandLoop:
    """The same training written by hand in plain PyTorch, advanced one step at a time."""

    def __init__(self, case: Case, pair: DomainPair, model, seed: int) -> None:
        self.model = model
        self.memory = torch.channels_last if case.channels_last else torch.contiguous_format
        model.to(memory_format=self.memory)
        self.files = None if pair.source.in_memory else self._file_data(case, pair)
        if self.files is None:
            self.images = pair.source.images
            self.test_images = pair.source_test.images
        self.labels = pair.source.labels
        self.test_labels = pair.source_test.clean_labels
        # The usual AdamW recipe, as tlkit's: no weight decay on biases and norm parameters.
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 1e-2}, {"params": no_decay, "weight_decay": 0.0}],
            lr=case.lr,
        )
        self.generator = torch.Generator().manual_seed(seed + 1)
        # tlkit's batch plan (every sample each epoch, a short last batch), so that the two
        # sides' epochs end on the same step
        self.sizes = batch_sizes(len(self.labels), case.batch_size)
        self.i = 0
        self.batches: Any = None  # this epoch's (x, y); None: the next step starts an epoch
        self.losses: list[torch.Tensor] = []
        self.accuracy = float("nan")

    @staticmethod
    def _file_data(case: Case, pair: DomainPair) -> tuple[Any, Any]:
        """The folder path: tlkit's per-sample pipeline as a plain dataset (training) and a plain
        DataLoader (test)."""
        from tlkit.datasets import collate
        from tlkit.datasets.transforms import eval_transform, train_transform

        test = torch.utils.data.DataLoader(
            pair.source_test.dataset(eval_transform(case.image_size)), batch_size=64,
            collate_fn=collate, num_workers=0,
        )  # fmt: skip
        return pair.source.dataset(train_transform(case.image_size)), test

    def _epoch(self) -> Any:
        """One epoch's batches: a shuffled order cut by tlkit's batch plan, sliced from the tensor
        or read through a plain DataLoader."""
        from tlkit.datasets import collate

        order = torch.randperm(len(self.labels), generator=self.generator)
        chunks = list(split(order, self.sizes))
        if self.files is None:
            return ((self.images[i].float().div_(255), self.labels[i]) for i in chunks)
        loader = torch.utils.data.DataLoader(
            self.files[0], batch_sampler=[c.tolist() for c in chunks], collate_fn=collate
        )
        return ((x, self.labels[idx]) for x, idx in loader)

    def step(self) -> None:
        if self.batches is None:  # a new epoch, as tlkit's: train mode, a new order
            self.model.train()
            self.batches = self._epoch()
        x, y = next(self.batches)
        x = self.model.prepare(x).contiguous(memory_format=self.memory)
        logits = self.model.head(self.model.backbone(x))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.detach())
        self.i += 1

    def end_epoch(self) -> None:
        if not torch.isfinite(torch.stack(self.losses)).all():
            raise RuntimeError("hand loop: the loss diverged")
        self.losses.clear()
        self.batches = None
        self.model.eval()
        correct = 0
        if self.files is not None:
            batches = ((x, self.test_labels[idx]) for x, idx in self.files[1])
        else:
            batches = (
                (self.test_images[s : s + 256].float().div_(255), self.test_labels[s : s + 256])
                for s in range(0, len(self.test_images), 256)
            )
        with torch.no_grad():
            for x, y in batches:
                out = self.model.head(
                    self.model.backbone(self.model.prepare(x).contiguous(memory_format=self.memory))
                )
                correct += int((out.argmax(1) == y).sum())
        self.accuracy = correct / len(self.test_labels)


class Lockstep:
    """Observer: after each tlkit step one hand step; after each tlkit epoch the hand evaluation."""

    def __init__(self, hand: HandLoop) -> None:
        self.hand = hand
        self.wall: dict[str, list[float]] = {k: [] for k in ("t_step", "h_step", "t_end", "h_end")}
        self.cpu: dict[str, list[float]] = {k: [] for k in ("t_step", "h_step")}
        self._mark = self._cpu_mark = 0.0

    def _now(self) -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    @tlkit.hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self._mark, self._cpu_mark = self._now()

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer: Any, step: Any, logs: dict[str, float]) -> None:
        t, c = self._now()
        self.hand.step()
        t2, c2 = self._now()
        self.wall["t_step"].append(t - self._mark)
        self.wall["h_step"].append(t2 - t)
        self.cpu["t_step"].append(c - self._cpu_mark)
        self.cpu["h_step"].append(c2 - c)
        self._mark, self._cpu_mark = t2, c2

    @tlkit.hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        t, _ = self._now()
        self.hand.end_epoch()
        t2, c2 = self._now()
        self.wall["t_end"].append(t - self._mark)
        self.wall["h_end"].append(t2 - t)
        self._mark, self._cpu_mark = t2, c2


def profile_tlkit(case: Case, pair: DomainPair, model, seed: int, top: int = 25) -> str:
    """cProfile one plain tlkit fit: the functions with the most own time, then tlkit's own
    functions by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    fit_tlkit(case, pair, model, seed)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    out.write("\n--- tlkit, plugin and pluggy functions by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(
        r"(trainer|evaluate|registry|metrics|_hooks|_manager|_callers|cross_entropy|schedules"
        r"|base\.py)",
        top,
    )
    return out.getvalue()


def measure(case: Case, seed: int, profile: str) -> dict:
    pair = make_data(case, seed)
    base = build_model(case, seed)
    # Untimed warm-up of both code paths (allocator, oneDNN primitives, lazy imports).
    warm = replace(case, epochs=1)  # two steps and one evaluation
    warm_pair = replace(pair, source=pair.source.subset(torch.arange(2 * case.batch_size)))
    hand = HandLoop(warm, warm_pair, copy.deepcopy(base), seed)
    fit_tlkit(warm, warm_pair, copy.deepcopy(base), seed, [Lockstep(hand)])
    pooled: dict[str, list[float]] = {k: [] for k in ("t_step", "h_step", "t_end", "h_end")}
    cpu: dict[str, list[float]] = {"t_step": [], "h_step": []}
    ratios, cpu_ratios, end_ratios, acc = [], [], [], {}
    for r in range(case.repeats):
        hand = HandLoop(case, pair, copy.deepcopy(base), seed)
        clock = Lockstep(hand)
        run = fit_tlkit(case, pair, copy.deepcopy(base), seed, [clock])
        if hand.i != run.last["step"]:
            raise RuntimeError(f"step counts differ: tlkit {run.last['step']}, hand {hand.i}")
        for k in pooled:
            pooled[k] += clock.wall[k]
        for k in cpu:
            cpu[k] += clock.cpu[k]
        ratios += [a / b for a, b in zip(clock.wall["t_step"], clock.wall["h_step"])]
        cpu_ratios += [a / b for a, b in zip(clock.cpu["t_step"], clock.cpu["h_step"])]
        end_ratios += [a / b for a, b in zip(clock.wall["t_end"], clock.wall["h_end"])]
        acc = {"tlkit": run.last["source_accuracy"], "hand": hand.accuracy}
        print(
            f"  {case.label} fit {r + 1}: tlkit {common.median(clock.wall['t_step']) * 1e3:.1f} "
            f"ms/step, hand {common.median(clock.wall['h_step']) * 1e3:.1f} ms/step; epoch end "
            f"{common.median(clock.wall['t_end']):.2f} s vs {common.median(clock.wall['h_end']):.2f} s"
        )
    spe = len(batch_sizes(len(pair.source), case.batch_size))  # tlkit's steps per epoch
    med = {k: common.median(v) for k, v in pooled.items()}
    amortised_t = med["t_step"] + med["t_end"] / spe
    amortised_h = med["h_step"] + med["h_end"] / spe
    # The headline: paired ratios (robust to load drifting between pairs), weighted by the hand
    # loop's share of time in steps and in epoch ends.
    step_ratio, end_ratio = common.median(ratios), common.median(end_ratios)
    w_step, w_end = med["h_step"], med["h_end"] / spe
    paired = (step_ratio * w_step + end_ratio * w_end) / (w_step + w_end)
    result = {
        "case": case,
        "steps": len(pooled["t_step"]),
        "spe": spe,
        "med": med,
        "amortised_t": amortised_t,
        "amortised_h": amortised_h,
        "ratio": paired,
        "ratio_of_medians": amortised_t / amortised_h,
        "step_ratio": step_ratio,
        "end_ratio": end_ratio,
        "cpu_step_ratio": common.median(cpu_ratios),
        "total_ratio": (sum(pooled["t_step"]) + sum(pooled["t_end"]))
        / (sum(pooled["h_step"]) + sum(pooled["h_end"])),
        "acc": acc,
        "profile": None,
    }
    if profile == "always" or (profile == "auto" and result["ratio"] > TARGET):
        print(f"  {case.label}: profiling one plain tlkit fit ...")
        result["profile"] = profile_tlkit(case, pair, copy.deepcopy(base), seed)
    return result


HEADERS = [
    "model",
    "paired steps",
    "median step ms, tlkit / hand",
    "median paired step ratio (CPU time)",
    "median epoch end s, tlkit / hand",
    "median paired epoch-end ratio",
    "tlkit/hand (amortised, paired)",
    "amortised ms/step, tlkit / hand (ratio)",
    "sum-of-times ratio",
    "test acc tlkit / hand",
    f"<= {TARGET}",
]

NOTE = (
    "tlkit and the hand-written loop run in lock-step in one process (one hand step after each "
    "tlkit step, inside an observer hook), so each pair of steps is timed under the same machine "
    "load. `tlkit/hand (amortised, paired)` is the target: the median paired step ratio and the "
    "median paired epoch-end ratio (evaluation; tlkit also flushes logs and builds the history "
    "row), weighted by the hand loop's time in steps and in epoch ends / steps per epoch. The "
    "unpaired ratio of amortised medians and the sum-of-times ratio (every interval added up) are "
    "shown for comparison; load spikes on a shared machine move them. Test accuracies differ "
    "because the two sides use different data orders, learning-rate schedules and parameter "
    "groups (tlkit's mode='full' also uses discriminative rates, lr/10 .. lr). See the script's "
    "docstring for exactly what each side does."
)


def table_row(res: dict) -> list[str]:
    c, med = res["case"], res["med"]
    return [
        c.label,
        f"{res['steps']} ({c.repeats} fit x {c.epochs} ep x {res['spe']}, bs {c.batch_size})",
        f"{med['t_step'] * 1e3:.1f} / {med['h_step'] * 1e3:.1f}",
        f"{res['step_ratio']:.3f} ({res['cpu_step_ratio']:.3f})",
        f"{med['t_end']:.2f} / {med['h_end']:.2f}",
        f"{res['end_ratio']:.3f}",
        f"**{res['ratio']:.3f}**",
        f"{res['amortised_t'] * 1e3:.1f} / {res['amortised_h'] * 1e3:.1f} "
        f"({res['ratio_of_medians']:.3f})",
        f"{res['total_ratio']:.3f}",
        f"{res['acc']['tlkit']:.3f} / {res['acc']['hand']:.3f}",
        "yes" if res["ratio"] <= TARGET else "NO",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (a few seconds)")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[c.key for c in FULL_CASES],
        help="run only these models (each has its own section in the results file)",
    )
    parser.add_argument("--repeats", type=int, help="lock-step fits per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nchw",
        action="store_true",
        help="both sides in the contiguous NCHW layout (default: channels-last, tlkit's default)",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        help="cProfile a tlkit fit (default auto: when a ratio misses the target; never with "
        "--quick)",
    )
    parser.add_argument("--results", help="markdown file to update (default: full runs only)")
    args = parser.parse_args(argv)
    common.setup_torch("cpu")
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.models:
        cases = [c for c in cases if c.key in args.models]
    profile = args.profile or ("never" if args.quick else "auto")
    if args.repeats:
        cases = [replace(c, repeats=args.repeats) for c in cases]
    if args.nchw:
        cases = [replace(c, channels_last=False) for c in cases]
    path = common.results_path(args.results, "engine_overhead", args.quick)
    total = time.perf_counter()
    rows = []
    for case in cases:
        info = common.machine_info("cpu")
        wall = time.perf_counter()
        res = measure(case, args.seed, profile)
        wall = time.perf_counter() - wall
        rows.append(table_row(res))
        table = common.markdown_table(HEADERS, [rows[-1]])
        print(f"\n{table}\n{case.label}: {wall:.0f} s")
        if res["profile"]:
            print(f"\ncProfile of one plain tlkit fit, {case.label}:\n{res['profile']}")
        if path is None:
            continue
        body = [
            common.machine_block(info, common.command_line()),
            "",
            table,
            "",
            f"Wall time for this model: {wall:.0f} s.",
            "",
            NOTE,
        ]
        if res["profile"]:
            body += ["", "cProfile of one plain tlkit fit:", "", "```", res["profile"].strip()]
            body += ["```"]
        key = f"{'quick' if args.quick else 'full'}-{case.key}" + (
            "" if case.channels_last else "-nchw"
        )
        title = f"{case.label}" + (" (quick run)" if args.quick else "")
        common.update_results(
            path,
            key,
            title,
            "\n".join(body),
            file_title="Engine overhead: tlkit.fit vs a hand-written loop",
        )
        print(f"wrote {path} ({title})")
    print()
    print(common.markdown_table(HEADERS, rows))
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
