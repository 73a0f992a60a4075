"""Where a run computes: the device, the precision and the memory format.

* ``device="auto"``: the CUDA GPU of this process (``LOCAL_RANK`` under torchrun) when there is one,
  else the CPU.
* ``precision="auto"``: bf16 autocast on GPUs that support it, fp32 elsewhere; ``"fp16"`` (with a
  gradient scaler) needs CUDA.
* ``channels_last="auto"``: NHWC memory format for image data, on CUDA and on CPU alike: oneDNN's
  convolutions run faster in it on an ordinary AVX2 x86-64 CPU too (``benchmarks/cpu_step.py``).
  Other inputs (feature vectors, token ids) have no 4-d layout and stay as they are.
"""

from __future__ import annotations

import contextlib
import warnings
from contextlib import nullcontext

import torch

from tlkit.errors import ConfigError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' was asked for but no CUDA GPU is visible; use 'cpu'.")
        if device.type == "cuda" and device.index is None:  # each torchrun process its own GPU
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def pick_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision='fp16' needs a CUDA GPU; on CPU use 'fp32' or 'bf16'.")
    return precision


def use_channels_last(option: bool | str, modality: str) -> bool:
    """Whether a run lays out images and convolution weights channels-last (NHWC).

    ``"auto"`` turns it on for image data, where convolutions gain on CPUs and GPUs alike, and
    off for any other modality, which has no 4-d layout to change."""
    return modality == "image" if option == "auto" else bool(option)


def autocast_for(device: torch.device, precision: str):
    """An autocast context for ``precision`` ("fp32" gives a no-op context)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def compile_hook_guards(compile: bool) -> contextlib.AbstractContextManager:
    """Around a run with ``compile``: make torch.compile check forward hooks before reusing a
    compiled forward. By default it does not, and a forward compiled in an earlier run of the
    same process (without BatchNorm-swapping hooks, say) would run in this one without them.
    (torch's config patches are thread-local, so a run in another thread keeps its own.)"""
    if not compile:
        return nullcontext()
    dynamo_config = getattr(getattr(torch, "_dynamo", None), "config", None)
    if not hasattr(dynamo_config, "skip_nnmodule_hook_guards"):
        warnings.warn(
            "this torch has no torch._dynamo.config.skip_nnmodule_hook_guards: a compiled run "
            "after another compiled run in this process may reuse a forward compiled without "
            "its BatchNorm hooks (domain_bn='separate', DSBN); restart the kernel between "
            "such runs, or train without compile=True.",
            stacklevel=3,
        )
        return nullcontext()
    return dynamo_config.patch(skip_nnmodule_hook_guards=False)
