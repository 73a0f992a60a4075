"""GPU training throughput: images/s of fine-tuning through tlkit's engine and by hand.

For each model (torchvision ResNet-50 with a random init, so nothing downloads; EfficientNet-Lite0
with its offline ImageNet weights) at 224 px, and each configuration

* ``fp32``: float32, NCHW, eager;
* ``bf16+cl``: bf16 autocast, channels_last model and inputs, eager;
* ``bf16+cl+compile``: the same under ``torch.compile``;

two runs train every layer (``mode="full"``: forward, cross-entropy, backward, AdamW step) on the
same synthetic in-memory data (uint8 images of the right size, made with
``tlkit.datasets.from_arrays`` and copied to the GPU before the clock starts, as tlkit keeps data
smaller than 2 GiB there; labels cycle over 10 classes):

* ``tlkit``: ``tlkit.Trainer(data, config=FitConfig(..., max_steps=warm-up + measured steps))`` -- the
  engine path ``tlkit.fit`` takes (hooks, schedule, logging, loss bookkeeping included);
* ``hand``: a hand-written loop with the same settings (the model's ``prepare`` on the batch,
  ``channels_last`` inputs, autocast, ``torch.compile`` of backbone + head, AdamW).

The first ``--warmup`` steps (compilation, cuDNN autotuning, allocator growth) are not timed; the
clock runs from a ``cuda.synchronize()`` after them to one after the last step. Runs alternate
between tlkit and hand; the table shows the median images/s and the tlkit/hand ratio (1.0 = no
engine overhead; target >= 0.95). A "checks" column records what the tlkit run actually did:
autocast dtype, channels_last weights, a compiled forward, a finite loss.

**The folder pipeline** (a second table, first in the run): a generated ImageFolder of JPEG photo
crops (``benchmarks/data_pipeline.py``'s, ``--pipeline-images`` of them) through
``tlkit.fit(domain, "efficientnet_lite0", image_size=224, num_workers=W)`` -- lazy listing,
decoding and ``RandomResizedCrop``/flip in ``DataLoader`` workers, pinned memory, non-blocking
copies, bf16 + channels_last -- against a hand-written ``ImageFolder`` + ``DataLoader`` loop with the
same model, transform and workers, and against a loop that reads the JPEG bytes in the workers and
decodes them on the GPU (``torchvision.io.decode_jpeg(device="cuda")``, then crop/resize on the
GPU): what GPU decoding would buy when the CPU cannot keep up. Images/s between the first and the
last of ``--pipeline-steps`` steps (worker start-up not counted). The same three paths run again
on ``--camera-images`` camera-size JPEGs (3000x2000, batch 32), where tlkit decodes each photo at
the smallest DCT scale that covers its crop and the hand loops decode every pixel.

Eager configurations run twice per side (alternating), compiled ones once (compiling costs a
minute or more per run). One invocation runs every check, so a single call on a lent GPU machine
covers it (about 6-8 minutes on an H100); ``--budget`` skips, and marks, configurations not
started within 540 s so that the call ends inside a 10-minute limit. Results are written (after
every row) only when the run is on CUDA, to ``benchmarks/results/gpu_throughput.md`` or to
``--results PATH``; on a remote machine write under ``$OUT`` and copy the file back.

    .venv/bin/python benchmarks/gpu_throughput.py --results $OUT/gpu_throughput.md  # on a GPU
    .venv/bin/python benchmarks/gpu_throughput.py --quick --device cpu    # smoke run on CPU
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tlkit
from tlkit.engine.device import autocast_for

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

TARGET = 0.95
COMPILE_HEADROOM = 150.0  # a compiled configuration starts only this long before the budget
CONFIGS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "channels_last": False, "compile": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True, "compile": False},
    "bf16+cl+compile": {"precision": "bf16", "channels_last": True, "compile": True},
}
MODELS: dict[str, dict[str, Any]] = {
    "resnet50": {"backbone": "resnet50", "pretrained": False},
    "efficientnet_lite0": {"backbone": "efficientnet_lite0", "pretrained": "auto"},
}


@dataclass
class Settings:
    device: torch.device
    image_size: int
    batch_size: int
    warmup: int
    steps: int
    repeats: int
    compile_repeats: int
    data_batches: int  # synthetic dataset size = data_batches * batch_size
    lr: float = 1e-3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Observer: synchronises and reads the clock after the warm-up steps and after the last."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.last = warmup, warmup + steps
        self.t0 = self.t1 = None
        self.checks: dict[str, Any] = {}

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer: Any, step: Any, logs: dict[str, float]) -> None:
        n = trainer.state.step
        if n == 1:
            self.checks = {
                "logits dtype": str(step.logits.dtype).replace("torch.", ""),
                "channels_last weights": _weights_channels_last(trainer.model),
                "compiled": type(trainer.services.network).__name__ == "OptimizedModule",
            }
        if n == self.warmup:
            synchronize(trainer.device)
            self.t0 = time.perf_counter()
        elif n == self.last:
            synchronize(trainer.device)
            self.t1 = time.perf_counter()


def _weights_channels_last(model: nn.Module) -> bool:
    convs = [
        m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)
    ]
    return bool(convs) and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


class Net(nn.Module):
    """Backbone + head, returning ``(features, logits)`` as tlkit's compiled network does
    (``prepare`` runs before it on both sides)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.backbone(x)
        return features, self.model.head(features)


# -- the folder pipeline ----------------------------------------------------------------------
PIPELINE_HEADERS = ["path", "images/s", "ratio to hand ImageFolder", "notes"]


def _clock_pass(device: torch.device, steps: int, run_steps: Any) -> float:
    """Images/s between the first and the last step of ``run_steps`` (a generator of batch sizes)."""
    ends: list[float] = []
    sizes: list[int] = []
    for n in run_steps:
        synchronize(device)
        ends.append(time.perf_counter())
        sizes.append(n)
        if len(ends) == steps:
            break
    return sum(sizes[1:]) / (ends[-1] - ends[0])


def pipeline_rows(device: torch.device, images: int, steps: int, workers: int, batch: int,
                  size: int, camera: tuple[int, int] | None = None) -> list[list[str]]:  # fmt: skip
    """The folder pipeline's three paths (see the module docstring), on ordinary photo crops or,
    with ``camera=(w, h)``, on camera-size JPEGs (tlkit decodes those at a reduced DCT scale)."""
    import data_pipeline
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    if camera is None:
        folder, what = data_pipeline.generate_folder(images), f"{images} photo crops"
    else:
        folder = data_pipeline.camera_folder(camera, images)
        what = f"{images} x {camera[0]}x{camera[1]} JPEG"
    precision = "bf16" if device.type == "cuda" else "fp32"
    transform = tlkit.datasets.transforms.train_transform(size)
    classes = len(ImageFolder(str(folder)).classes)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return tlkit.backbones.create_model("efficientnet_lite0", classes, input_size=size)

    def tlkit_rate() -> float:
        ends: list[float] = []
        sizes: list[int] = []

        class Clock:  # after each step: wait for the device, read the clock
            @tlkit.hookimpl
            def tlkit_on_step_end(self, step):
                synchronize(device)
                ends.append(time.perf_counter())
                sizes.append(len(step.y))

        domain = tlkit.datasets.from_folder(folder, progress=False)
        tlkit.fit(domain, model=model(), mode="full", image_size=size, batch_size=batch,
                  num_workers=workers, precision=precision, max_steps=steps, epochs=100,
                  progress=False, observers=[Clock()])  # fmt: skip
        return sum(sizes[1:]) / (ends[-1] - ends[0])

    def hand_steps(decode_on_gpu: bool):
        net = model().to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        if decode_on_gpu:
            ds = ImageFolder(str(folder), loader=lambda p: open(p, "rb").read())
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, num_workers=workers,
                persistent_workers=workers > 0,
                collate_fn=lambda b: ([x for x, _ in b], torch.tensor([y for _, y in b])),
            )  # fmt: skip
        else:
            ds = ImageFolder(str(folder), transform=v2.Compose([v2.PILToTensor(), transform]))
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, num_workers=workers,
                pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            )  # fmt: skip
        gpu_crop = v2.Compose(
            [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        )
        # as many epochs as the clock asks for (a small folder is shorter than the workers'
        # prefetch, which would otherwise hide the decoding)
        batches = (item for _ in itertools.count() for item in loader)
        for x, y in batches:
            if decode_on_gpu:
                from torchvision.io import decode_jpeg

                raw = [torch.frombuffer(b, dtype=torch.uint8) for b in x]
                decoded = decode_jpeg(raw, device=device)
                x = torch.stack([gpu_crop(img) for img in decoded]).float().div_(255)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_for(device, precision):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield len(y)

    rows = []
    t = tlkit_rate()
    h = _clock_pass(device, steps, hand_steps(False))
    tlkit_side = (
        "tlkit.fit (reduced-size decoding in workers)"
        if camera
        else "tlkit.fit (decode in workers)"
    )
    rows.append([f"{what}: {tlkit_side}", f"{t:.0f}", f"{t / h:.2f}", f"{workers} workers"])
    rows.append([f"{what}: hand ImageFolder + DataLoader", f"{h:.0f}", "1.00",
                 f"{workers} workers, PIL"])  # fmt: skip
    if device.type == "cuda":
        g = _clock_pass(device, steps, hand_steps(True))
        rows.append([f"{what}: hand, JPEG decoded on the GPU", f"{g:.0f}", f"{g / h:.2f}",
                     "decode_jpeg(cuda)"])  # fmt: skip
    return rows


def make_data(s: Settings) -> tlkit.datasets.Domain:
    g = torch.Generator().manual_seed(0)
    n = s.data_batches * s.batch_size
    images = torch.randint(
        0, 256, (n, 3, s.image_size, s.image_size), dtype=torch.uint8, generator=g
    )
    labels = torch.arange(n) % 10
    return tlkit.datasets.from_arrays(images, labels, name="synthetic")


def run_tlkit(s: Settings, data, base: nn.Module, config: dict[str, Any]) -> dict:
    clock = StepClock(s.warmup, s.steps)
    total = s.warmup + s.steps
    cfg = tlkit.FitConfig(
        backbone=base.backbone.name,
        mode="full",
        epochs=math.ceil(total / s.data_batches),
        batch_size=s.batch_size,
        lr=s.lr,
        device=str(s.device),
        max_steps=total,
        progress=False,
        seed=0,
        **config,
    )
    trainer = tlkit.Trainer(data, config=cfg, model=copy.deepcopy(base), observers=[clock])
    run = trainer.fit()
    loss = run.step_logs[-1]["loss"] if run.step_logs else float("nan")
    seconds = clock.t1 - clock.t0
    return {
        "ips": s.steps * s.batch_size / seconds,
        "checks": {**clock.checks, "finite loss": math.isfinite(loss)},
    }


def run_hand(s: Settings, data, base: nn.Module, config: dict[str, Any]) -> dict:
    device = s.device
    torch.manual_seed(0)
    model = copy.deepcopy(base).to(device)
    if config["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    images = data.images.to(device)
    labels = data.labels.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=1e-2)
    net: nn.Module = Net(model)
    if config["compile"]:
        net = torch.compile(net)
    n, bs = len(labels), s.batch_size
    total = s.warmup + s.steps
    order = torch.randperm(n, device=device)
    t0 = t1 = None
    losses = []
    for step in range(1, total + 1):
        i = (step - 1) % (n // bs)
        if i == 0 and step > 1:
            order = torch.randperm(n, device=device)
        idx = order[i * bs : (i + 1) * bs]
        x = model.prepare(images[idx].float().div_(255))
        if config["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, config["precision"]):
            _, logits = net(x)
        loss = F.cross_entropy(logits.float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step == s.warmup:
            synchronize(device)
            t0 = time.perf_counter()
    synchronize(device)
    t1 = time.perf_counter()
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    return {"ips": s.steps * bs / (t1 - t0), "checks": {"finite loss": finite}}


HEADERS = [
    "model",
    "config",
    "tlkit images/s",
    "hand images/s",
    "tlkit/hand",
    "runs per side",
    "checks (tlkit run)",
]


def measure(s: Settings, data, base: nn.Module, config: dict[str, Any], label: str) -> dict:
    repeats = s.compile_repeats if config["compile"] else s.repeats
    ips: dict[str, list[float]] = {"tlkit": [], "hand": []}
    checks: dict[str, Any] = {}
    for r in range(repeats):
        for side in ("tlkit", "hand") if r % 2 == 0 else ("hand", "tlkit"):
            fn = run_tlkit if side == "tlkit" else run_hand
            res = fn(s, data, base, config)
            ips[side].append(res["ips"])
            if side == "tlkit":
                checks.update(res["checks"])
            elif not res["checks"]["finite loss"]:
                checks["hand finite loss"] = False
            print(f"  {label} {side}: {res['ips']:.1f} images/s")
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
    t, h = common.median(ips["tlkit"]), common.median(ips["hand"])
    return {"tlkit": t, "hand": h, "ratio": t / h, "repeats": repeats, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (a few seconds)")
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda if any)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        help="default: all on CUDA; fp32 and bf16+cl on CPU (compiling on CPU takes minutes)",
    )
    parser.add_argument("--image-size", type=int, help="default 224 (32 with --quick)")
    parser.add_argument("--batch-size", type=int, help="default 128 (4 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 15, quick 1)")
    parser.add_argument("--steps", type=int, help="timed steps (default 50, quick 2)")
    parser.add_argument("--repeats", type=int, help="alternating repeats, eager (default 2)")
    parser.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="seconds; configurations not started by then (compiled ones: 150 s earlier) are "
        "skipped, and say so, so that one call fits a 10-minute limit (default 540)",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip the folder pipeline")
    parser.add_argument("--pipeline-images", type=int, help="photos (default 2000, quick 64)")
    parser.add_argument("--pipeline-steps", type=int, help="steps a pass (default 30, quick 3)")
    parser.add_argument("--camera-images", type=int,
                        help="camera-size JPEGs (3000x2000, batch 32) for the folder table's "
                        "second part (default 255, written in about a minute; quick 12; 0: none)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (default 8)")
    parser.add_argument(
        "--results",
        help="markdown file to update (CUDA runs only; default benchmarks/results/"
        "gpu_throughput.md; on a remote machine pass a path under $OUT to get it back)",
    )
    args = parser.parse_args(argv)

    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible; pass --device cpu for a smoke run")
    common.setup_torch(device.type)
    on_cuda = device.type == "cuda"
    quick = args.quick
    s = Settings(
        device=device,
        image_size=args.image_size or (32 if quick else 224),
        batch_size=args.batch_size or (4 if quick else 128),
        warmup=args.warmup or (1 if quick else 15),
        steps=args.steps or (2 if quick else 50),
        repeats=args.repeats or (1 if quick else 2),
        compile_repeats=1,
        data_batches=4 if quick else 8,
    )
    configs = args.configs or (list(CONFIGS) if on_cuda else ["fp32", "bf16+cl"])
    info = common.machine_info(str(device))
    if on_cuda:
        info["cuDNN"] = str(torch.backends.cudnn.version())
        info["TF32 matmul / cuDNN"] = (
            f"{torch.backends.cuda.matmul.allow_tf32} / {torch.backends.cudnn.allow_tf32}"
        )
    setting = (
        f"{s.image_size} px, batch {s.batch_size}, {s.warmup} warm-up + {s.steps} timed steps "
        f"per run, mode='full', AdamW, synthetic uint8 data ({s.data_batches * s.batch_size} "
        f"images) on {device.type}."
    )
    path = None
    if on_cuda:
        path = Path(args.results) if args.results else common.RESULTS_DIR / "gpu_throughput.md"
    start = time.perf_counter()
    if not args.no_pipeline:
        import data_pipeline  # beside this script

        workers = min(args.workers, 2) if quick else args.workers
        steps = args.pipeline_steps or (3 if quick else 30)
        pipe = pipeline_rows(device, args.pipeline_images or (64 if quick else 2000), steps,
                             workers, s.batch_size, s.image_size)  # fmt: skip
        cameras = args.camera_images if args.camera_images is not None else (12 if quick else 255)
        cameras -= cameras % data_pipeline.CAMERA_CLASSES  # whole class folders
        if cameras:  # where tlkit's reduced-size JPEG decoding applies
            pipe += pipeline_rows(device, cameras, steps, workers, min(s.batch_size, 32),
                                  s.image_size, camera=(3000, 2000))  # fmt: skip
        print(common.markdown_table(PIPELINE_HEADERS, pipe))
        info["folder pipeline"] = "; ".join(f"{r[0]}: {r[1]} img/s ({r[2]})" for r in pipe)
    data = make_data(s)  # on the host; each run copies it to the device, untimed, as tlkit does
    rows: list[list[str]] = []
    ratios: list[float] = []
    skipped: list[str] = []
    bases = {}
    for model_name in args.models:
        spec = MODELS[model_name]
        torch.manual_seed(0)
        bases[model_name] = tlkit.backbones.create_model(
            spec["backbone"], 10, pretrained=spec["pretrained"], input_size=s.image_size
        )
    # Configurations outermost, so that a time budget cuts the compiled runs, not a whole model.
    for config_name in configs:
        for model_name, base in bases.items():
            label = f"{model_name} {config_name}"
            headroom = COMPILE_HEADROOM if CONFIGS[config_name]["compile"] else 0.0
            if time.perf_counter() - start > args.budget - headroom:
                skipped.append(label)
                rows.append([model_name, config_name, "-", "-", "-", "0", "skipped: time budget"])
                continue
            res = measure(s, data, base, CONFIGS[config_name], label)
            ratios.append(res["ratio"])
            rows.append(
                [
                    model_name,
                    config_name,
                    f"{res['tlkit']:.1f}",
                    f"{res['hand']:.1f}",
                    f"{res['ratio']:.3f}",
                    str(res["repeats"]),
                    ", ".join(f"{k}: {v}" for k, v in res["checks"].items()),
                ]
            )
            if path is not None:  # after every row, so a run cut short still leaves a table
                write(path, info, setting, rows, ratios, time.perf_counter() - start, quick)
    wall = time.perf_counter() - start
    print()
    print(setting)
    print(common.markdown_table(HEADERS, rows))
    print(verdict(ratios))
    if skipped:
        print(f"skipped for the time budget: {', '.join(skipped)}")
    print(f"total wall time {wall:.0f} s")
    if path is None:
        print("(not on CUDA: results file not written)")
    else:
        write(path, info, setting, rows, ratios, wall, quick)
        print(f"\nwrote {path}")
    return 0


def verdict(ratios: list[float]) -> str:
    if not ratios:
        return "no configuration measured"
    worst = min(ratios)
    met = "met" if worst >= TARGET else "NOT met"
    return f"worst tlkit/hand = {worst:.3f} (target >= {TARGET}: {met})"


def write(path: Path, info, setting: str, rows, ratios, wall: float, quick: bool) -> None:
    body = "\n".join(
        [
            common.machine_block(info, common.command_line()),
            "",
            setting,
            "",
            common.markdown_table(HEADERS, rows),
            "",
            f"**{verdict(ratios)}**",
            "",
            f"Wall time of the script so far: {wall:.0f} s.",
        ]
    )
    common.write_run(
        path,
        body,
        quick=quick,
        file_title="GPU training throughput: tlkit engine vs a hand-written loop",
    )


if __name__ == "__main__":
    raise SystemExit(main())
