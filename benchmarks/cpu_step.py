"""The CPU training step next to its ceiling: which accelerations pay on a CPU, and which do not.

For each model (``small_cnn`` at 32 px, ``efficientnet_lite0`` at 224 px) one fine-tuning step is
a bare PyTorch loop: uint8 batch -> ``model.prepare`` -> forward -> cross-entropy -> backward ->
AdamW step. The step is timed in four variants, each on its own copy of the same initial weights:

* ``fp32``: the default (contiguous NCHW tensors, float32);
* ``channels_last``: model and inputs in NHWC memory format;
* ``bf16 autocast``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss;
* ``compile``: ``torch.compile`` (inductor), which generates C++ and needs a compiler at run time.

The variants run in lock-step (one step of each in turn, ``rounds`` times), so every ratio is of
steps measured within a second of each other under the same machine load; the table reports the
median step time and the median of the per-round ratios to ``fp32``.

The ceiling is this machine's fp32 matrix-multiply rate measured in the same run (the best of a
few 1024x1024 ``torch.mm`` runs). A step's work is counted with ``torch.utils.flop_counter``
(the forward pass, times 3 for forward and backward; see :func:`step_gflop`); ``% of ceiling`` =
achieved FLOP/s / ceiling. Depthwise convolutions and elementwise work count few FLOPs and run
far below matmul speed, so a MobileNet-style network sits well under the ceiling by construction.

The whole table is measured twice: with the CPU's own kernels, and as an ordinary x86-64 CPU
without special instructions (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: no AVX-512,
no bf16 or AMX instructions), in a child process. An acceleration is on by default in tlkit only
if it pays there and needs no compiler on the user's machine.

``--demo 0 1 2`` instead checks that the layout leaves accuracy alone: the demo's fine-tune phase
(``tlkit demo``'s recipe and data) for each seed in NCHW and channels-last, test accuracy after
the last epoch.

    .venv/bin/python benchmarks/cpu_step.py            # both ISAs, ~10 min on 2 idle cores
    .venv/bin/python benchmarks/cpu_step.py --quick    # smoke run
    .venv/bin/python benchmarks/cpu_step.py --variants fp32 channels_last --rounds 16
    .venv/bin/python benchmarks/cpu_step.py --demo 0 1 2 --results benchmarks/results/cpu_step.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    command_line,
    machine_block,
    machine_info,
    markdown_table,
    results_path,
    setup_torch,
    update_results,
    write_run,
)

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MODELS = {  # name: (image size, batch size)
    "small_cnn": (32, 64),
    "efficientnet_lite0": (224, 8),
}
VARIANTS = ("fp32", "channels_last", "bf16 autocast", "compile")


def matmul_ceiling(n: int = 1024, trials: int = 5) -> float:
    """The best fp32 ``torch.mm`` rate, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        reps = 10
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def make_step(model: torch.nn.Module, variant: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of ``model`` in the given variant."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    memory = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    if variant == "channels_last":
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if variant == "compile" else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = model.prepare(x).contiguous(memory_format=memory)
        if variant == "bf16 autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(x).float(), y)
        else:
            loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_gflop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """A training step's GFLOP: the forward pass counted by ``torch.utils.flop_counter``, times 3
    (the backward computes a gradient for the inputs and one for the weights, each about one
    forward's work). The counter's own backward count is not used: it ignores ``groups`` in
    ``convolution_backward`` and counts a depthwise layer's backward as a dense convolution's,
    which puts efficientnet_lite0's step at 257 GFLOP instead of about 18."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        F.cross_entropy(probe(probe.prepare(x)), y)
    return 3 * counter.get_total_flops() / 1e9


def measure(name: str, rounds: int, variants: tuple[str, ...] = VARIANTS) -> list[dict]:
    """Rows for one model: every variant, timed in lock-step."""
    from tlkit.backbones import create_model

    size, batch = MODELS[name]
    torch.manual_seed(0)
    base = create_model(name, num_classes=10, pretrained=False, input_size=size).train()
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch,))
    gflop = step_gflop(base, x, y)
    steps, first, failed = {}, {}, {}
    for variant in variants:
        try:
            steps[variant] = make_step(copy.deepcopy(base), variant)
            start = time.perf_counter()
            steps[variant](x, y)  # warm-up; for compile this is the compilation
            first[variant] = time.perf_counter() - start
            steps[variant](x, y)
        except Exception as error:  # noqa: BLE001 - a variant that cannot run is a finding
            failed[variant] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
            steps.pop(variant, None)
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(rounds):
        for variant, step in steps.items():
            start = time.perf_counter()
            step(x, y)
            times[variant].append(time.perf_counter() - start)
    rows = []
    for variant in variants:
        if variant in failed:
            rows.append(
                dict(model=name, size=size, batch=batch, variant=variant, failed=failed[variant])
            )
            continue
        ratios = [t / b for t, b in zip(times[variant], times["fp32"])]
        med = statistics.median(times[variant])
        rows.append(
            dict(
                model=name,
                size=size,
                batch=batch,
                variant=variant,
                gflop=gflop,
                ms=med * 1e3,
                ratio=statistics.median(ratios),
                gflops=gflop / med,
                first_s=first[variant],
            )
        )
    return rows


def child_rows(quick: bool, env: dict[str, str], variants: list[str], rounds: int) -> dict:
    """Run the measurement in a child process with ``env`` added (ISA limits apply at start-up)."""
    cmd = [sys.executable, __file__, "--child", "--rounds", str(rounds), "--variants", *variants]
    cmd += ["--quick"] if quick else []
    with tempfile.TemporaryDirectory() as cache:  # inductor's kernels are built for one ISA
        env = {**os.environ, **env, "TORCHINDUCTOR_CACHE_DIR": cache}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], ceiling: float) -> str:
    body = []
    for r in rows:
        if "failed" in r:
            body.append(
                [
                    r["model"],
                    f"{r['size']} px, bs {r['batch']}",
                    r["variant"],
                    "failed",
                    "",
                    "",
                    "",
                    r["failed"],
                ]
            )
            continue
        body.append(
            [
                r["model"],
                f"{r['size']} px, bs {r['batch']}",
                r["variant"],
                f"{r['ms']:.1f}",
                f"{r['ratio']:.2f}",
                f"{r['gflops']:.1f}",
                f"{100 * r['gflops'] / ceiling:.1f}%",
                f"{r['first_s']:.1f} s",
            ]
        )
    headers = [
        "model",
        "input",
        "variant",
        "median step ms",
        "time / fp32 (paired)",
        "GFLOP/s",
        "% of ceiling",
        "first step",
    ]
    return markdown_table(headers, body)


def demo_one(seed: int, layout: bool, quick: bool) -> dict:
    """The demo's fine-tune phase (``tlkit demo``'s recipe and data) for one seed and layout:
    test accuracy after the last epoch (evaluated once, at the end) and the fit's seconds."""
    from dataclasses import replace

    import tlkit
    from tlkit.demo import DEMO_TASK, RECIPES

    _, backbone, recipe = RECIPES[-1]
    options = {"image_size": 96, **recipe, **(dict(epochs=2, freeze_epochs=1) if quick else {})}
    pair = tlkit.datasets.few_labels(tlkit.datasets.load(DEMO_TASK), 10, seed=seed)
    test = pair.source_test
    data = replace(pair, source_test=None, target=None, target_test=None)
    start = time.perf_counter()
    run = tlkit.fit(
        data,
        backbone,
        batch_size=20,
        seed=seed,
        channels_last=layout,
        device="cpu",
        progress=False,
        **options,
    )
    seconds = time.perf_counter() - start
    return dict(
        seed=seed,
        layout=layout,
        acc=run.evaluate(test)["accuracy"],
        seconds=seconds,
        backbone=backbone,
        options={k: options[k] for k in ("image_size", "epochs", "freeze_epochs")},
    )


def demo_fine_tune(seeds: list[int], quick: bool) -> str:
    """The demo's fine-tune phase, NCHW and channels-last, for each seed: every (seed, layout)
    fit in its own process, all at once (one thread each), so the accuracy check fits in a few
    minutes on a shared machine; the step's speed is the lock-step table's job."""
    procs = []
    for seed in seeds:
        for layout in (False, True):
            cmd = [sys.executable, __file__, "--demo-one", str(seed), str(int(layout))]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            procs.append(
                subprocess.Popen(
                    cmd + (["--quick"] if quick else []), env=env, stdout=subprocess.PIPE, text=True
                )
            )
    got = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a demo fine-tune failed: {proc.args}")
        got.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {got[-1]}", flush=True)
    body = []
    for layout in (False, True):
        acc = [g["acc"] for g in got if g["layout"] == layout]
        secs = [g["seconds"] for g in got if g["layout"] == layout]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        body.append(
            [
                "channels_last" if layout else "NCHW",
                " / ".join(f"{a:.3f}" for a in acc),
                f"{statistics.mean(acc):.3f} +- {std:.3f}",
                f"{statistics.mean(secs):.0f}",
            ]
        )
    o = got[0]["options"]
    headers = [
        "layout",
        "test accuracy per seed",
        "mean +- std",
        "mean fit s (all six fits at once, 1 thread each)",
    ]
    return (
        f"### the demo's fine-tune phase\n\n`{got[0]['backbone']}`, {o['image_size']} px, "
        f"{o['epochs']} epochs ({o['freeze_epochs']} head-only), 10 labels per class of "
        f"digits-m, seeds {seeds}, test accuracy after the last epoch (359 images).\n\n"
        + markdown_table(headers, body)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="which variants to time (fp32, the reference of the ratios, is always included)",
    )
    parser.add_argument("--rounds", type=int, help="lock-step rounds (default 12, quick 3)")
    parser.add_argument("--demo-one", type=int, nargs=2, help=argparse.SUPPRESS)  # seed layout
    parser.add_argument(
        "--demo",
        type=int,
        nargs="+",
        metavar="SEED",
        help="instead: the demo's fine-tune phase, NCHW vs channels-last, for these seeds",
    )
    args = parser.parse_args()
    setup_torch("cpu", threads=2)
    rounds = args.rounds or (3 if args.quick else 12)
    variants = ["fp32"] + [v for v in args.variants if v != "fp32"]
    names = ["small_cnn"] if args.quick else list(MODELS)
    if args.demo_one:
        torch.set_num_threads(1)
        print(json.dumps(demo_one(args.demo_one[0], bool(args.demo_one[1]), args.quick)))
        return
    if args.demo:
        section = demo_fine_tune(args.demo, args.quick)
        print(section)
        path = Path(args.results) if args.results else None
        if path:
            body = machine_block(machine_info("cpu"), command_line()) + "\n\n" + section
            update_results(
                path,
                "demo",
                "Channels-last in the demo's fine-tune phase",
                body,
                file_title="The CPU training step against its ceiling",
            )
        return
    if args.child:
        rows = [row for name in names for row in measure(name, rounds, tuple(variants))]
        print(json.dumps({"ceiling": matmul_ceiling(), "rows": rows}))
        return
    sections = []
    for label, env in (("this CPU's own kernels", {}), ("ordinary x86-64 (AVX2 only)", AVX2_ENV)):
        result = child_rows(args.quick, env, variants, rounds)
        ceiling = result["ceiling"]
        sections.append(
            f"### {label}\n\nfp32 matmul ceiling: {ceiling:.0f} GFLOP/s\n\n"
            + table(result["rows"], ceiling)
        )
        print(sections[-1], flush=True)
    info = machine_info("cpu")
    body = machine_block(info, command_line()) + "\n\n" + "\n\n".join(sections)
    path = results_path(args.results, "cpu_step", args.quick)
    if path:
        write_run(
            path, body, quick=args.quick, file_title="The CPU training step against its ceiling"
        )


if __name__ == "__main__":
    main()
