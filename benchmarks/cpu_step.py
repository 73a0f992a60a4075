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
(forward and backward); ``% of ceiling`` = achieved FLOP/s / ceiling. Depthwise convolutions and
elementwise work count few FLOPs and run far below matmul speed, so a MobileNet-style network
sits well under the ceiling by construction.

The whole table is measured twice: with the CPU's own kernels, and as an ordinary x86-64 CPU
without special instructions (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: no AVX-512,
no bf16 or AMX instructions), in a child process. An acceleration is on by default in tlkit only
if it pays there and needs no compiler on the user's machine.

    .venv/bin/python benchmarks/cpu_step.py            # both ISAs, ~10 min on 2 idle cores
    .venv/bin/python benchmarks/cpu_step.py --quick    # smoke run
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
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(probe(probe.prepare(x)), y).backward()
    return counter.get_total_flops() / 1e9


def measure(name: str, rounds: int) -> list[dict]:
    """Rows for one model: every variant, timed in lock-step."""
    from tlkit.backbones import create_model

    size, batch = MODELS[name]
    torch.manual_seed(0)
    base = create_model(name, num_classes=10, pretrained=False, input_size=size).train()
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch,))
    gflop = step_gflop(base, x, y)
    steps, first, failed = {}, {}, {}
    for variant in VARIANTS:
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
    for variant in VARIANTS:
        if variant in failed:
            rows.append(dict(model=name, size=size, batch=batch, variant=variant, failed=failed[variant]))
            continue
        ratios = [t / b for t, b in zip(times[variant], times["fp32"])]
        med = statistics.median(times[variant])
        rows.append(
            dict(
                model=name, size=size, batch=batch, variant=variant, gflop=gflop,
                ms=med * 1e3, ratio=statistics.median(ratios), gflops=gflop / med,
                first_s=first[variant],
            )
        )
    return rows


def child_rows(quick: bool, env: dict[str, str]) -> dict:
    """Run the measurement in a child process with ``env`` added (ISA limits apply at start-up)."""
    cmd = [sys.executable, __file__, "--child"] + (["--quick"] if quick else [])
    with tempfile.TemporaryDirectory() as cache:  # inductor's kernels are built for one ISA
        env = {**os.environ, **env, "TORCHINDUCTOR_CACHE_DIR": cache}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], ceiling: float) -> str:
    body = []
    for r in rows:
        if "failed" in r:
            body.append([r["model"], f"{r['size']} px, bs {r['batch']}", r["variant"],
                         "failed", "", "", "", r["failed"]])
            continue
        body.append([
            r["model"], f"{r['size']} px, bs {r['batch']}", r["variant"], f"{r['ms']:.1f}",
            f"{r['ratio']:.2f}", f"{r['gflops']:.1f}", f"{100 * r['gflops'] / ceiling:.1f}%",
            f"{r['first_s']:.1f} s",
        ])
    headers = ["model", "input", "variant", "median step ms", "time / fp32 (paired)",
               "GFLOP/s", "% of ceiling", "first step"]
    return markdown_table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    setup_torch("cpu", threads=2)
    rounds = 3 if args.quick else 12
    names = ["small_cnn"] if args.quick else list(MODELS)
    if args.child:
        rows = [row for name in names for row in measure(name, rounds)]
        print(json.dumps({"ceiling": matmul_ceiling(), "rows": rows}))
        return
    sections = []
    for label, env in (("this CPU's own kernels", {}), ("ordinary x86-64 (AVX2 only)", AVX2_ENV)):
        result = child_rows(args.quick, env)
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
        write_run(path, body, quick=args.quick, file_title="The CPU training step against its ceiling")


if __name__ == "__main__":
    main()
