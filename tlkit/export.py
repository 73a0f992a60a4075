"""Exporting a trained model for inference without tlkit: ``torch.export`` (``.pt2``) or ONNX.

What is exported takes **float images in [0, 1], shape (B, 3, S, S)** -- ``S`` the side the
backbone sees -- and returns the head's outputs (logits, or regression values). The normalisation
with the backbone's mean and standard deviation is *inside* the exported program; what stays
outside is bringing an image to ``(3, S, S)``, exactly as :meth:`tlkit.Run.predict` does, which
differs by what the image is:

* arrays and tensors (``run.predict(images)``): divide ``uint8`` by 255, repeat one channel to
  three, resize the *whole* image to ``S x S`` (bilinear, no crop);
* files: decode to RGB upright, then the run's evaluation transform -- short side to
  ``S / 0.875`` and the centre ``S x S`` for photos, or the whole image to ``S x S`` for
  digit-like files -- and divide by 255.

Models of tensor data (``mlp``, text encoders) export as they are: their inputs are the domain's
rows. The batch size is dynamic.

The preprocessing is written next to the program, step by step for both kinds of input (under
``input.arrays`` and ``input.files``, with the sizes as numbers) -- inside the ``.pt2`` archive as
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

from tlkit.datasets.transforms import CROP_FRACTION
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
    """What the exported program expects, as plain values (written beside it): for images, how
    ``run.predict`` brings arrays (``input.arrays``) and files (``input.files``) to it, step by
    step, so code without tlkit can do the same and get the same predictions."""
    spec = run.spec
    modality = spec.get("modality", "image")
    info: dict[str, Any] = {
        "format": "tlkit-export",
        "version": 1,
        "task": run.task,
        "classes": list(run.classes),
        "modality": modality,
    }
    if modality != "image":
        shape = spec.get("input_shape") or []
        info["input"] = {"shape": ["batch", *shape], "note": "the domain's rows, as given"}
        return info
    side = program_side(run)
    arrays = _arrays(run.model.backbone.input_size)
    files = _files(run.image_size or 224, spec.get("resize", "crop"), side)
    info["input"] = {
        "shape": ["batch", 3, side, side],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "normalisation": "inside the program (the backbone's mean and std)",
        "arrays": arrays,
        "files": files,
        "preprocess": f"arrays and tensors: {arrays['steps']}. Image files: {files['steps']}.",
    }
    return info


def program_side(run: Any) -> int:
    """The side of the square images the exported program takes: what the backbone sees."""
    return run.model.backbone.input_size or run.image_size or 224


def _arrays(size: int | None) -> dict[str, Any]:
    """How ``run.predict`` prepares images given as arrays or tensors
    (:meth:`tlkit.backbones.TransferModel.prepare`, less the normalisation)."""
    if size is None:
        resize: dict[str, Any] = {"mode": "none"}
        how = "used at their own size"
    else:
        resize = {
            "mode": "squash",
            "size": [size, size],
            "interpolation": "bilinear",
            "align_corners": False,
            "antialias": "when shrinking",
        }
        how = (
            f"resize the whole image to {size}x{size} in float, "
            "torch.nn.functional.interpolate(mode='bilinear', align_corners=False, "
            "antialias=True only when shrinking); no crop"
        )
    return {
        "scale": "uint8 divided by 255; float taken as given, in [0, 1]",
        "channels": "1 channel repeated to 3",
        "resize": resize,
        "steps": f"divide uint8 by 255, repeat 1 channel to 3, {how}",
    }


#: The DCT scales JPEG files are decoded at, coarsest first (:mod:`tlkit.datasets.reduced`).
JPEG_DRAFT_SCALES = [8, 4, 2, 1]


def _files(size: int, mode: str, side: int) -> dict[str, Any]:
    """How ``run.predict`` decodes and resizes image files (the run's evaluation transform:
    :func:`tlkit.engine.evaluate.eval_transform`)."""
    if mode == "squash":
        resize: dict[str, Any] = {"mode": "squash", "size": [size, size]}
        how = f"resize the whole image to {size}x{size}"
        shrink = f"min(width, height) / {size}"
    else:
        short = round(size / CROP_FRACTION)
        resize = {"mode": "crop", "short_side": short, "crop": size}
        how = (
            f"resize the short side to {short} px (the long side to "
            f"floor({short} * long / short)), centre-crop {size}x{size} (offsets "
            f"round((side - {size}) / 2))"
        )
        shrink = f"short side / {short}"
    resize.update(interpolation="bilinear", antialias=True, on="uint8")
    steps = (
        "decode to RGB upright (EXIF orientation applied); a JPEG is decoded at the coarsest "
        f"DCT scale k in {JPEG_DRAFT_SCALES} with k <= {shrink} (PIL: Image.draft), then resized "
        f"from that; {how}, bilinear antialiased on uint8 (PIL's BILINEAR); divide by 255"
    )
    out: dict[str, Any] = {"resize": resize, "jpeg_draft_scales": JPEG_DRAFT_SCALES}
    if side != size:  # the model resizes what the evaluation transform made, like an array
        out["then"] = _arrays(side)["resize"]
        steps += f"; then resize to {side}x{side} as for arrays"
    out["steps"] = steps
    return out


def example_input(run: Any, batch: int = 2) -> torch.Tensor:
    """A zero batch of what the exported program takes."""
    if run.spec.get("modality", "image") == "image":
        side = program_side(run)
        return torch.zeros(batch, 3, side, side)
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
