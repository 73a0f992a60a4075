"""Exporting a trained model for inference without tlkit: ``torch.export`` (``.pt2``) or ONNX.

What is exported takes **float images in [0, 1], shape (B, 3, S, S)** -- ``S`` the run's image
size -- and returns the head's outputs (logits, or regression values). The normalisation with the
backbone's mean and standard deviation is *inside* the exported program; what stays outside is
getting a photo to ``(3, S, S)``: decode it to RGB, resize its short side to ``S / 0.875`` and
crop the centre ``S x S`` (``tlkit.datasets.transforms.eval_transform(S)`` does exactly that), and
divide by 255. Models of tensor data (``mlp``, text encoders) export as they are: their inputs are
the domain's rows. The batch size is dynamic.

The preprocessing is written next to the program -- inside the ``.pt2`` archive as
``extra/tlkit.json``, and as ``model.onnx.json`` beside an ONNX file -- with the class names, so a
deployment knows what the outputs mean::

    program = torch.export.load("model.pt2", extra_files={"tlkit.json": ""})
    logits = program.module()(images)           # (B, K)

The program is serialised in memory and written through
:func:`tlkit.engine.safe_write.write_atomically`: a full disk or a read-only folder raises a
``SaveError`` ("no space left on device"), never aborts the process, and leaves no partial file.

ONNX needs the ``[export]`` extra (``pip install "tlkit[export]"``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit.engine.safe_write import SaveError, save_error, write_atomically
from tlkit.errors import ConfigError

SUFFIXES = (".pt2", ".onnx")


class InferenceModel(nn.Module):
    """``(B, C, S, S)`` floats in [0, 1] -> outputs: normalise, backbone, head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.images = getattr(model.backbone, "modality", "image") == "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.images:
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = (x - self.backbone.mean) / self.backbone.std
        return self.head(self.backbone(x))


def preprocessing(run: Any) -> dict[str, Any]:
    """What the exported program expects, as plain values (written beside it)."""
    spec = run.spec
    modality = spec.get("modality", "image")
    size = run.image_size or 224
    info: dict[str, Any] = {
        "format": "tlkit-export",
        "version": 1,
        "task": run.task,
        "classes": list(run.classes),
        "modality": modality,
    }
    if modality == "image":
        squash = spec.get("resize") == "squash"
        info["input"] = {
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "preprocess": (
                f"decode to RGB, resize to {size}x{size} (the whole image), divide by 255"
                if squash
                else f"decode to RGB, resize the short side to {round(size / 0.875)} px, "
                f"centre-crop {size}x{size}, divide by 255 "
                f"(tlkit.datasets.transforms.eval_transform({size}))"
            ),
            "normalisation": "inside the program (the backbone's mean and std)",
        }
    else:
        shape = spec.get("input_shape") or []
        info["input"] = {"shape": ["batch", *shape], "note": "the domain's rows, as given"}
    return info


def example_input(run: Any, batch: int = 2) -> torch.Tensor:
    """A zero batch of what the exported program takes."""
    if run.spec.get("modality", "image") == "image":
        size = run.image_size or 224
        return torch.zeros(batch, 3, size, size)
    kwargs = run.spec.get("build_kwargs") or {}
    if "in_features" in kwargs:
        return torch.zeros(batch, int(kwargs["in_features"]))
    length = (run.spec.get("input_shape") or [16])[-1]
    return torch.ones(batch, int(length), dtype=torch.long)  # token ids (0 pads)


def export_model(run: Any, path: str | Path) -> Path:
    """Write ``run``'s model to ``path`` (``.pt2`` or ``.onnx``); returns the path."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigError(
            f"export('{path}'): use a '.pt2' file (torch.export) or '.onnx' (ONNX, with the "
            "[export] extra)."
        )
    if not path.parent.is_dir():
        raise ConfigError(f"export('{path}'): the folder '{path.parent}' does not exist.")
    module = InferenceModel(copy.deepcopy(run.model)).cpu().eval()  # the run's model stays put
    example = example_input(run)
    info = json.dumps(preprocessing(run), indent=1)
    dims = {0: torch.export.Dim("batch", min=1, max=65536)}
    if not example.is_floating_point():  # token ids: any sequence length
        dims[1] = torch.export.Dim("length", min=2, max=65536)
    with torch.no_grad():
        if path.suffix == ".pt2":
            program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
            buffer = io.BytesIO()  # torch's own file writer aborts the process on a full disk
            torch.export.save(program, buffer, extra_files={"tlkit.json": info})
            return _write(path, [(path, buffer.getbuffer())])
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ConfigError(
                "ONNX export needs the onnx and onnxscript packages: pip install 'tlkit[export]'."
            ) from None
        program = torch.onnx.export(
            module,
            (example,),
            None,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=(dims,),
            dynamo=True,
            verbose=False,
        )
        proto = program.model_proto.SerializeToString()
    sidecar = Path(f"{path}.json")
    return _write(path, [(path, proto), (sidecar, info.encode())])


def _write(path: Path, files: list[tuple[Path, Any]]) -> Path:
    """Write each ``(file, bytes)`` atomically through :mod:`tlkit.engine.safe_write` (no
    partial file on a full disk); when one fails, the ones already written are removed too."""
    done: list[Path] = []
    try:
        for target, data in files:
            done.append(write_atomically(target, lambda f, data=data: f.write(data)))
    except SaveError as exc:
        for written in done:
            written.unlink(missing_ok=True)
        raise save_error(
            path,
            exc.__cause__ or exc,
            "The run is unchanged (run.model): export it again where there is space.",
        ) from exc.__cause__
    return path
