"""Third-party strategies: the example plugin package installed offline, and tlkit.register."""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tlkit

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "tlkit-example-plugin"
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The example package installed into a temporary folder: offline, the venv untouched.

    It is built from a copy, so that setuptools' build/ and egg-info never land in the repo."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    src = shutil.copytree(PLUGIN, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
    cmd += ["--target", str(target)]
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "tlkit_example_plugin" / "focal.py").exists()
    return target


@pytest.fixture(scope="module")
def plugin_report(installed_plugin) -> dict:
    """One fresh interpreter that sees the installed plugin (one start-up for both checks):
    what tlkit lists, the loss on hand-computed cases, and a short training run. Prints JSON."""
    code = f"""
import json, math, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {str(TESTS)!r})
import torch, tlkit
from conftest import pattern_domain
from tlkit.datasets import DomainPair

info = {{s.name: s for s in tlkit.strategies()}}["focal"]
from tlkit_example_plugin.focal import FocalLoss
logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p_true = 0.5, 0.75
focal = FocalLoss().tlkit_supervised_loss(logits, torch.tensor([0, 0])).tolist()
ce = FocalLoss(gamma=0).tlkit_supervised_loss(logits, torch.tensor([0, 1])).tolist()
torch.set_num_threads(1)
train, test = pattern_domain(128, seed=0, name="src").split(0.25, seed=0)
run = tlkit.fit(DomainPair(train, test), loss="focal", backbone="small_cnn", epochs=1,
                progress=False, mode="full", batch_size=16, lr=3e-3, log_every=1)
print(json.dumps({{"family": info.family, "provider": info.provider, "summary": info.summary,
                  "focal": focal, "ce": ce, "losses": [r["loss"] for r in run.step_logs],
                  "accuracy": run.last["source_accuracy"]}}))
"""
    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "OMP_NUM_THREADS": "1"}
    env.setdefault("TLKIT_CACHE", str(installed_plugin.parent / "cache"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=installed_plugin.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_installed_plugin_is_listed_with_its_provider(plugin_report):
    assert plugin_report["family"] == "loss"
    assert plugin_report["provider"] == "tlkit-example-plugin"
    assert plugin_report["summary"].startswith("Focal loss (Lin et al. 2017)")


def test_installed_plugin_matches_hand_computed_values(plugin_report):
    # (1 - 0.5)^2 ln 2 and (1 - 0.75)^2 ln(4/3); gamma = 0 is cross-entropy
    expected = [0.25 * math.log(2), 0.0625 * math.log(4 / 3)]
    assert plugin_report["focal"] == pytest.approx(expected, rel=1e-5)
    assert plugin_report["ce"] == pytest.approx([math.log(2), math.log(4)], rel=1e-5)


def test_installed_plugin_trains(plugin_report):
    losses = plugin_report["losses"]  # one per step: 96 images / batch 16
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] or plugin_report["accuracy"] > 0.25  # 4 classes: chance 0.25


def test_example_plugin_uses_only_public_tlkit_api():
    """Written as a third party would: ``import tlkit``, then ``tlkit.hookimpl`` and
    ``tlkit.options``, nothing deeper."""
    tree = ast.parse((PLUGIN / "tlkit_example_plugin" / "focal.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert {m for m in imported if m.startswith("tlkit")} == {"tlkit"}
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "tlkit"
    }
    assert used == {"hookimpl", "options"}


# -- tlkit.register: a strategy defined in a notebook cell -------------------------------------
def test_a_notebook_cell_strategy_is_registered_used_and_replaced(tiny_task, fast):
    try:

        @tlkit.register
        class Squared:  # a cell: define, decorate, use
            """Squared error on one-hot targets (a cell-made loss)."""

            name, family = "test_cell_loss", "loss"
            requires_task = "classification"

            def __init__(self, scale: float = 1.0):
                self.scale = scale

            @tlkit.hookimpl
            def tlkit_supervised_loss(self, logits, targets):
                onehot = F.one_hot(targets, logits.shape[1]).float()
                return self.scale * (logits.softmax(1) - onehot).pow(2).sum(1)

        info = {s.name: s for s in tlkit.strategies("loss")}["test_cell_loss"]
        assert info.provider == "session" and info.summary.startswith("Squared error")
        run = tlkit.fit(
            tiny_task, epochs=2, mode="full", loss=("test_cell_loss", {"scale": 2}), **fast
        )
        assert math.isfinite(run.history[-1]["supervised"])
        assert run.history[-1]["supervised"] < run.history[0]["supervised"]

        class Squared:  # the same cell, edited and re-run: replaces the earlier version  # noqa: F811
            """Version 2."""

            name, family = "test_cell_loss", "loss"
            requires_task = "classification"

            @tlkit.hookimpl
            def tlkit_supervised_loss(self, logits, targets):
                return torch.zeros(len(targets), requires_grad=True)

        tlkit.register(Squared)
        assert {s.name: s for s in tlkit.strategies()}["test_cell_loss"].summary == "Version 2."
        run = tlkit.fit(tiny_task, epochs=1, loss="test_cell_loss", **fast)
        assert run.history[-1]["supervised"] == 0.0
    finally:
        tlkit.unregister("test_cell_loss")
    assert "test_cell_loss" not in {s.name for s in tlkit.strategies()}
