"""The benchmarks that only run on a lent GPU machine, or at a quiet moment, still run: their smoke
modes on CPU. A GPU loan is short; a script broken by a refactor would waste it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "TLKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
def test_gpu_throughput_runs_every_part_on_cpu(tmp_path):
    out = run_script("gpu_throughput.py", "--quick", "--device", "cpu", "--models",
                     "efficientnet_lite0", "--configs", "bf16+cl", "--pipeline-steps", "4",
                     tmp_path=tmp_path)  # fmt: skip
    assert "3000x2000 JPEG: tlkit.fit (reduced-size decoding in workers)" in out  # camera rows
    assert "photo crops: hand ImageFolder + DataLoader" in out
    assert "channels_last weights: True" in out and "finite loss: True" in out


#: Every other benchmark's smoke mode, with what its output must show.
QUICK = {
    "active_learning.py": ("--quick",),
    "cli_folder.py": ("--quick",),
    "cpu_step.py": ("--quick", "--variants", "fp32", "channels_last"),
    "data_pipeline.py": ("--quick", "--no-fit"),
    "domain_adaptation.py": ("--quick",),
    "engine_overhead.py": ("--quick",),
    "feature_extraction.py": ("--quick",),
    "lr_finder.py": ("--quick",),
    "noisy_labels.py": ("--quick",),
    "rank_backbones.py": ("--quick",),
    "semi_supervised.py": ("--quick",),
    "text_transfer.py": ("--quick",),
    "transfer_digits_m.py": ("--quick",),
}


def test_every_benchmark_has_a_smoke_run():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(QUICK) | {"gpu_throughput.py"}, "add the new script to QUICK"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_quick_run_finishes_and_prints_a_table(script, tmp_path):
    out = run_script(script, *QUICK[script], tmp_path=tmp_path)
    assert "| ---" in out, out[-1500:]  # a markdown table was printed
