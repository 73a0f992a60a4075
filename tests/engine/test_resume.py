"""Runs you can trust: exact resume on every path, checkpoints that are never poisoned, one run per
checkpoint folder, and a run's own state (strategies included) saved with it."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.engine.checkpoint import FolderLock, save_checkpoint
from tlkit.errors import CheckpointError, ConfigError, PluginError, TrainingError

TESTS = Path(__file__).resolve().parents[1]
FINE_TUNE = dict(mode="fine_tune", freeze_epochs=1, epochs=3, adapt="dann", ema=0.9)


def weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def assert_same_run(a, b):
    assert a.history == b.history
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def run_script(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (one thread, like the tests)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        torch.set_num_threads(1)
        """
    ) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TLKIT_CACHE": os.environ.get("TLKIT_CACHE", "")},
    )


# -- killed runs resume exactly ---------------------------------------------------------------
def test_sigkill_in_the_first_unfrozen_epoch_resumes_exactly(tiny_task, fast, tmp_path):
    """The default fine-tune path: epoch 1 frozen, killed (SIGKILL, a real process) during epoch
    2, resumed from the end-of-epoch checkpoint: the phase change is replayed, not refused."""
    opts = {**fast, **FINE_TUNE}
    whole = tlkit.fit(tiny_task, **opts)
    killed = run_script(
        f"""
        import os, signal
        import tlkit
        from conftest import make_tiny_task

        class Kill:
            @tlkit.hookimpl
            def tlkit_on_step_end(self, trainer):
                if trainer.state.epoch == 1 and trainer.state.step_in_epoch == 3:
                    os.kill(os.getpid(), signal.SIGKILL)

        tlkit.fit(make_tiny_task(), checkpoint_dir=sys.argv[1], observers=[Kill()], **{opts!r})
        """,
        str(tmp_path),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["optimizer_phase"] == "frozen"
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert_same_run(resumed, whole)


def test_resume_from_mid_epoch_checkpoints_of_every_phase(tiny_task, fast, tmp_path):
    opts = {**fast, **FINE_TUNE}
    whole = tlkit.fit(tiny_task, **opts)
    for stop in (2, 6, 9):  # frozen epoch, its last step, the unfrozen phase
        folder = tmp_path / str(stop)
        tlkit.fit(tiny_task, checkpoint_dir=str(folder), max_steps=stop, **opts)
        resumed = tlkit.fit(tiny_task, checkpoint_dir=str(folder), resume=True, **opts)
        assert_same_run(resumed, whole)


def test_a_changed_learning_rate_applies_on_resume(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, mode="full", **{**fast, "lr": 3e-3})
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), max_steps=3, **opts)
    seen = []

    class Rates:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            seen.append(max(g["base_lr"] for g in trainer.optimizer.param_groups))

    resumed = tlkit.fit(
        tiny_task,
        checkpoint_dir=str(tmp_path),
        resume=True,
        observers=[Rates()],
        **{**opts, "lr": 1e-3},
    )
    assert resumed.config.lr == 1e-3 and set(seen) == {1e-3}
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["config"]["lr"] == 1e-3
    assert max(g["base_lr"] for g in saved["optimizer"]["param_groups"]) == 1e-3


# -- a checkpoint folder belongs to one run ---------------------------------------------------
def test_another_runs_checkpoint_is_refused(tiny_task, fast, tmp_path):
    tlkit.fit(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), max_steps=2, **fast)
    with pytest.raises(
        CheckpointError, match=r"another run: it differs in seed \(0 there, 1 here\)"
    ):
        tlkit.fit(
            tiny_task, epochs=2, checkpoint_dir=str(tmp_path), resume=True, **{**fast, "seed": 1}
        )
    other = tlkit.datasets.DomainPair(tiny_task.source_test, name="tiny")
    with pytest.raises(CheckpointError, match=r"differs in data \(.*source"):
        tlkit.fit(other, epochs=2, checkpoint_dir=str(tmp_path), resume=True, **fast)
    # a new run (not resuming) moves the other run's checkpoints aside instead of replacing them
    tlkit.fit(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), **{**fast, "seed": 1})
    kept = torch.load(tmp_path / "previous" / "last.pt", weights_only=True)
    assert kept["identity"]["seed"] == 0 and kept["state"]["step"] == 2
    again = tlkit.fit(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), **fast)
    assert not again.stopped_early and (tmp_path / "previous-2" / "last.pt").exists()


def test_a_second_run_on_a_locked_folder_gets_a_clear_error(tiny_task, fast, tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(ConfigError, match="in use by another run \\(pid"):
            tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tlkit.engine.checkpoint import FolderLock; "
            "lock = FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by another run \\(pid {holder.pid}"):
            tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    finally:
        holder.kill()  # a killed holder leaves no stale lock: the kernel drops it
        holder.wait()
    run = tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    assert run.history


# -- checkpoints are always good --------------------------------------------------------------
def all_finite(path: Path) -> bool:
    ckpt = torch.load(path, weights_only=True)
    states = [ckpt["model"], *ckpt["extra_modules"].values()] + (
        [ckpt["ema"]] if ckpt["ema"] else []
    )
    return all(torch.isfinite(v).all() for s in states for v in s.values() if v.is_floating_point())


def test_non_finite_batchnorm_statistics_are_never_saved(tiny_task, fast, tmp_path):
    class Poison:  # the loss stays finite (training mode normalises with batch statistics)
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            if trainer.state.step == 3:
                bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                bn.running_var.fill_(math.inf)

    with pytest.raises(
        TrainingError, match=r"non-finite \(model\..*running_var\) by step 4"
    ) as err:
        tlkit.fit(
            tiny_task,
            epochs=2,
            checkpoint_dir=str(tmp_path),
            checkpoint_every=2,
            observers=[Poison()],
            **fast,
        )
    assert f"The last good checkpoint is kept at {tmp_path / 'last.pt'}" in str(err.value)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["state"]["step"] == 2
    assert all_finite(tmp_path / "last.pt")


def test_the_divergence_message_says_what_was_saved(tiny_task, fast, tmp_path, temp_strategy):
    class Explodes:
        name, family, requires_task = "test_explodes", "loss", "classification"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets, step):
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            return loss * math.inf if step.index == 2 else loss

    temp_strategy(Explodes)
    with pytest.raises(TrainingError) as err:  # checkpoint_dir set, checkpoint_every=0
        tlkit.fit(tiny_task, epochs=2, loss="test_explodes", checkpoint_dir=str(tmp_path), **fast)
    assert "No checkpoint had been written yet" in str(err.value)
    assert "set checkpoint_dir" not in str(err.value)


def test_temporary_files_of_killed_writes_are_cleared_and_the_folder_synced(
    tiny_task, fast, tmp_path, monkeypatch
):
    orphan = tmp_path / ".last.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    synced_folders = []
    real_fsync = os.fsync

    def fsync(fd):
        if _is_dir_fd(fd):
            synced_folders.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    assert not orphan.exists() and not list(tmp_path.glob(".*.tmp"))
    assert synced_folders  # the rename itself was made durable


def _is_dir_fd(fd: int) -> bool:
    import stat

    return stat.S_ISDIR(os.fstat(fd).st_mode)


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": torch.zeros(2)}, path)
    assert torch.load(path, weights_only=True)["x"].tolist() == [1.0, 1.0]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failing_epoch_end_hook_keeps_that_epochs_checkpoint(tiny_task, fast, tmp_path):
    opts = dict(epochs=2, mode="full", **fast)
    whole = tlkit.fit(tiny_task, **opts)

    class Fails:
        @tlkit.hookimpl
        def tlkit_on_epoch_end(self, epoch):
            if epoch == 1:
                raise OSError("disk full while logging")

    with pytest.raises(PluginError, match="observer 'Fails' failed in hook tlkit_on_epoch_end"):
        tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), observers=[Fails()], **opts)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and len(saved["history"]) == 1
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert_same_run(resumed, whole)


# -- strategies' own state --------------------------------------------------------------------
class CountingPenalty:
    """A penalty whose weight follows a plain-attribute counter (as the plugin guide shows)."""

    name, family = "test_counting", "regularizer"

    def __init__(self):
        self.calls = 0

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step):
        self.calls += 1
        return {"counted": step.logits.pow(2).mean() / self.calls}


class ExplicitState(CountingPenalty):
    """The same, with explicit state_dict / load_state_dict."""

    name = "test_explicit_state"

    def state_dict(self):
        return {"n": torch.tensor(self.calls)}

    def load_state_dict(self, state):
        self.calls = int(state["n"])


@pytest.mark.parametrize("strategy", [CountingPenalty, ExplicitState])
def test_strategy_state_survives_resume(tiny_task, fast, tmp_path, temp_strategy, strategy):
    temp_strategy(strategy)
    opts = dict(epochs=2, mode="full", regularize=strategy.name, **fast)
    whole = tlkit.fit(tiny_task, **opts)
    tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), max_steps=4, **opts)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["strategy_state"][strategy.name]
    assert int(saved.get("calls", saved.get("n"))) == 4
    resumed = tlkit.fit(tiny_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert_same_run(resumed, whole)


def test_damaged_checkpoints_are_explained(tiny_task, fast, tmp_path):
    tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), max_steps=2, **fast)
    good = torch.load(tmp_path / "last.pt", weights_only=True)
    for broken, message in (
        ({**good, "state": {"epoch": "x", "step": 1, "step_in_epoch": 1}}, "training position"),
        ({**good, "history": "no"}, "'history' is a str, not a list"),
        ({k: v for k, v in good.items() if k != "model"}, "no 'model' entry"),
    ):
        torch.save(broken, tmp_path / "last.pt")
        with pytest.raises(CheckpointError, match=message):
            tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), resume=True, **fast)
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    path = run.save(tmp_path / "run.pt")
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "config": {"lr": "fast"}}, tmp_path / "bad_config.pt")
    with pytest.raises(CheckpointError, match="no usable config"):
        tlkit.load(tmp_path / "bad_config.pt")
    renamed = {f"other.{k}": v for k, v in saved["model"].items()}
    torch.save({**saved, "model": renamed}, tmp_path / "other_arch.pt")
    with pytest.raises(CheckpointError, match="another architecture \\(missing: .*; unexpected"):
        tlkit.load(tmp_path / "other_arch.pt")


def test_a_killed_run_left_no_lock(tiny_task, fast, tmp_path):
    """SIGKILL while holding the folder: the next run starts without any stale-lock dance."""
    started = time.time()
    killed = run_script(
        """
        import os, signal
        import tlkit
        from conftest import make_tiny_task

        class Kill:
            @tlkit.hookimpl
            def tlkit_on_step_end(self):
                os.kill(os.getpid(), signal.SIGKILL)

        tlkit.fit(make_tiny_task(), epochs=1, checkpoint_dir=sys.argv[1], observers=[Kill()],
                  backbone="small_cnn", progress=False)
        """,
        str(tmp_path),
    )
    assert killed.returncode == -signal.SIGKILL
    run = tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    assert run.history and time.time() - started < 60


def test_saved_checkpoints_hold_the_model_the_history_measured_with_ema(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=2, ema=0.9, checkpoint_dir=str(tmp_path), **fast)
    x = tiny_task.source_test.images
    for name in ("last.pt",):
        loaded = tlkit.load(tmp_path / name)
        assert torch.allclose(loaded.predict_outputs(x), run.predict_outputs(x), atol=1e-6), name
