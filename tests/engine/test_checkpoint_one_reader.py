"""One checkpoint module: ``run.save`` and the trainer's ``last.pt`` / ``best.pt`` are written by
one writer and read by one reader, so a file from either path is validated the same way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tiny_task, fast, tmp_path):
    """A ``run.save`` file and the same run's ``last.pt``, and the options that resume it."""
    opts = dict(epochs=1, checkpoint_dir=str(tmp_path / "ckpt"), **fast)
    run = tlkit.fit(tiny_task, **opts)
    return run.save(tmp_path / "run.pt"), tmp_path / "ckpt" / "last.pt", opts


def first_weight(ckpt: dict) -> str:
    return next(k for k, v in ckpt["model"].items() if v.is_floating_point())


def with_inf_weight(ckpt: dict) -> dict:
    model = dict(ckpt["model"])
    name = first_weight(ckpt)
    model[name] = model[name].clone().fill_(float("inf"))
    return {**ckpt, "model": model}


DAMAGES = {
    "history of the wrong type": lambda c: {**c, "history": "no"},
    "best of the wrong type": lambda c: {**c, "best": [1, 2]},
    "step logs of the wrong type": lambda c: {**c, "step_logs": {"loss": 1.0}},
    "config missing": lambda c: {k: v for k, v in c.items() if k != "config"},
    "model description of the wrong type": lambda c: {**c, "model_spec": "small_cnn"},
    "a non-finite weight": with_inf_weight,
}


def refusal(load, path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        load()
    message = str(err.value)
    assert f"'{path}'" in message  # the error names the file
    return message.replace(str(path), "<file>")


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_file_and_last_pt_get_the_same_refusal(files, tiny_task, damage):
    saved, last, opts = files
    messages = []
    for path in (saved, last):
        ckpt = torch.load(path, weights_only=True)
        torch.save(DAMAGES[damage](ckpt), path)
        messages.append(refusal(lambda path=path: tlkit.load(path), path))
    messages.append(refusal(lambda: tlkit.fit(tiny_task, resume=True, **opts), last))
    assert messages[0] == messages[1] == messages[2], messages


def test_a_non_finite_file_is_refused_naming_the_tensor(files):
    saved, _, _ = files
    ckpt = torch.load(saved, weights_only=True)
    torch.save(with_inf_weight(ckpt), saved)
    with pytest.raises(CheckpointError, match=rf"non-finite values \(model\.{first_weight(ckpt)}"):
        tlkit.load(saved)


def test_a_run_file_is_a_training_checkpoint_without_its_training_state(files, tiny_task):
    saved, last, opts = files
    model_part = set(torch.load(saved, weights_only=True))
    training = set(torch.load(last, weights_only=True))
    assert {"format", "version", "config", "model_spec", "model", "history", "best"} <= model_part
    assert "step_logs" in model_part and model_part <= training
    assert {"state", "optimizer", "identity"} <= training - model_part
    for path in (saved, last):  # both load into a run that predicts the same
        x = tiny_task.source_test.images
        assert torch.equal(tlkit.load(path).predict(x), tlkit.load(saved).predict(x))
    with pytest.raises(CheckpointError, match="holds a finished model.*not a training state"):
        tlkit.fit(tiny_task, **{**opts, "resume": str(saved)})


#: Files that call torch.save / torch.load on something that is not a tlkit checkpoint.
NOT_CHECKPOINTS = {
    # plain weights of a backbone (backbone_weights=path, a downloaded state dict): read with
    # weights_only=True into the backbone alone, never a run
    "tlkit/backbones/__init__.py",
    "tlkit/backbones/torchvision_models.py",
    "tlkit/backbones/efficientnet.py",
}
CHECKPOINT_MODULE = "tlkit/engine/checkpoint.py"


def torch_save_load_calls(path: Path) -> list[str]:
    """``torch.save(`` / ``torch.load(`` calls in a source file (not text in its strings)."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("save", "load")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            calls.append(f"torch.{node.func.attr} (line {node.lineno})")
    return calls


def test_checkpoints_are_saved_and_loaded_only_by_the_checkpoint_module():
    found = {}
    for folder in ("tlkit", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            calls = torch_save_load_calls(path)
            if calls:
                found[path.relative_to(ROOT).as_posix()] = calls
    assert CHECKPOINT_MODULE in found  # the test sees real calls
    assert set(found) - NOT_CHECKPOINTS == {CHECKPOINT_MODULE}, found
    assert all(path in found for path in NOT_CHECKPOINTS), "an exception no longer applies"


def test_resuming_from_a_damaged_best_pt_names_the_file(files, tiny_task):
    from test_checkpoint_faults import damage_largest_tensor

    _, last, opts = files
    best = last.parent / "best.pt"
    damage_largest_tensor(best)
    with pytest.raises(CheckpointError, match="is damaged") as err:
        tlkit.fit(tiny_task, **{**opts, "resume": str(best)})
    assert f"'{best}'" in str(err.value)
    with pytest.raises(CheckpointError, match="is damaged") as err:
        tlkit.load(best)
    assert f"'{best}'" in str(err.value)
