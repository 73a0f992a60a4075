"""Weak and strong augmentation of image batches, for consistency methods such as FixMatch.

Both work on a float batch ``x`` of shape ``(B, C, H, W)`` in [0, 1], on any device, in a few
vectorised torch ops (no per-image Python loop, no PIL), and are deterministic given a
``torch.Generator``. Neither flips images: a mirrored digit is a different (or no) digit.

* weak: random translation by up to ``H/8`` / ``W/8`` pixels (reflect padding + random crop).
* strong: weak, then a random affine map (rotation +-30 degrees, shear, scale) through
  ``F.affine_grid`` / ``F.grid_sample``, brightness and contrast jitter, and a cutout square
  (DeVries & Taylor, 2017) -- the RandAugment-style "strong" view of Sohn et al., FixMatch 2020.
* colour: each image's background and ink get random colours, dark-on-light as often as
  light-on-dark (``augment="colour"``): colour randomisation in the spirit of domain
  randomisation (Tobin et al. 2017), for sources whose colours say nothing about the label
  (grey digits -> digits on photo patches: benchmarks/results/domain_adaptation.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .domain import DataError


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(
            f"augmentation takes a float batch (B, C, H, W) in [0, 1], got {shape} "
            f"{getattr(x, 'dtype', '')}. Convert uint8 images with images.float() / 255."
        )


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` uniform numbers per sample, drawn on the generator's device, moved to ``x``'s."""
    device = generator.device if generator is not None else x.device
    return torch.rand((x.shape[0], n), generator=generator, device=device).to(x.device)


def weak_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to 1/8 of the image size (reflect-padded crop), per sample."""
    _check(x)
    b, c, h, w = x.shape
    if h < 2 or w < 2 or b == 0:
        return x.clone()
    ph, pw = max(1, h // 8), max(1, w // 8)  # reflect padding stays below the size
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")
    r = _rand(2, x, generator)
    oy = (r[:, 0] * (2 * ph + 1)).long().clamp_(max=2 * ph)  # (B,)
    ox = (r[:, 1] * (2 * pw + 1)).long().clamp_(max=2 * pw)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def strong_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Weak, then random affine (rotate/shear/scale), brightness/contrast jitter and cutout."""
    x = weak_augment(x, generator)
    b, c, h, w = x.shape
    if b == 0:
        return x
    r = _rand(8, x, generator).to(x.dtype)
    angle = (r[:, 0] * 2 - 1) * math.radians(30)
    shear = (r[:, 1] * 2 - 1) * 0.3
    scale = 0.8 + 0.4 * r[:, 2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    # inverse map (output -> input coordinates): rotation @ shear, divided by the scale
    theta = torch.zeros((b, 2, 3), dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (cos * shear - sin) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (sin * shear + cos) / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # contrast around the per-image mean, then brightness
    contrast = (0.6 + 0.8 * r[:, 3]).view(b, 1, 1, 1)
    brightness = ((r[:, 4] * 2 - 1) * 0.2).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    # cutout: a square of side 1/4..1/2 of the size, filled with grey, centred anywhere
    side = (0.25 + 0.25 * r[:, 5]) * min(h, w)
    cy, cx = r[:, 6] * h, r[:, 7] * w
    ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
    xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
    in_y = (ys[None, :] - cy[:, None]).abs() <= side[:, None] / 2  # (B, H)
    in_x = (xs[None, :] - cx[:, None]).abs() <= side[:, None] / 2  # (B, W)
    hole = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)
    x = x.masked_fill(hole, 0.5)
    return x.clamp_(0, 1)


def colour_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random colours per image: channel ``c`` becomes ``a_c + (b_c - a_c) * x_c`` with ``a``
    (the colour where ``x`` is 0, the background of a digit) and ``b`` (where it is 1, the ink)
    drawn uniformly from [0, 1]^C, so half the images come out inverted. ``(B, C, H, W)`` in
    [0, 1] -> the same shape in [0, 1]. Grey images get colour only if given as RGB (a pair of
    a grey and a colour domain is RGB already)."""
    _check(x)
    b, c = x.shape[:2]
    if b == 0:
        return x.clone()
    r = _rand(2 * c, x, generator).to(x.dtype)
    background = r[:, :c].view(b, c, 1, 1)
    ink = r[:, c:].view(b, c, 1, 1)
    return (background + (ink - background) * x).clamp_(0, 1)
