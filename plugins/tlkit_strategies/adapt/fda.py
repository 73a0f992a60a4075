r"""FDA: Fourier domain adaptation, the source images with the target's low-frequency amplitude.

Yang & Soatto, "FDA: Fourier Domain Adaptation for Semantic Segmentation", CVPR 2020.

Each source image :math:`x^s` (per channel, :math:`H \times W`) is given the low-frequency
amplitude spectrum of a target image :math:`x^t` drawn at random from the step's target batch,
keeping its own phase (which carries the digit's shape):

.. math::
    x^{s \to t} = \mathcal{F}^{-1}\big(\,[\, M_\beta \circ \mathcal{F}^A(x^t)
      + (1 - M_\beta) \circ \mathcal{F}^A(x^s),\ \mathcal{F}^P(x^s) \,]\,\big)

with :math:`\mathcal{F}^A, \mathcal{F}^P` the amplitude and phase of the 2-D Fourier transform
and :math:`M_\beta` the centred (after ``fftshift``) square of half-width
:math:`b = \lfloor \beta \min(H, W) \rfloor` -- the :math:`(2b + 1) \times (2b + 1)` lowest
frequencies, :math:`b = 0` being the mean colour alone -- as in the authors' code. The result is
clipped to [0, 1]. No network and no training of its own: the classifier is trained on
:math:`x^{s \to t}` with the source labels (``tlkit_transform_source``), so it learns on source
content in the target's colours, contrast and global texture. The paper uses
:math:`\beta \le 0.09` on 1024-pixel street scenes; on 16-32 px digits :math:`\beta = 0.1-0.2`
reaches one to three frequencies beyond the mean. The paper also adds an entropy term on the
target (``adapt=["fda", "entropy_min"]`` or ``["fda", "bnm"]`` here) and averages models trained
with several :math:`\beta` (not done here).

Channels: a grey source and a colour target cannot be mixed into the source batch's shape
(``(B, 1, H, W)``); give the source domain RGB images (grey repeated: the network sees the same
inputs) -- FDA refuses the mix with that advice. A colour source and a grey target: the target's
amplitude is used for every channel. Target images of another size are resized to the source's.

Shapes: source ``(B, C, H, W)``, target ``(B_t, C_t, H_t, W_t)`` float in [0, 1] -> ``(B, C, H, W)``.
Logged: nothing; ``tlkit.plots.source_to_target_grid(trainer, source, target)`` draws source
images next to their FDA versions (through :meth:`FDA.preview`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options


def match_target(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``target`` images ``(B_t, C_t, H_t, W_t)`` resized and channel-matched to ``like``'s
    ``(B, C, H, W)`` format (grey target -> repeated channels; colour -> grey by the mean)."""
    target = target.to(like.dtype)
    if target.shape[-2:] != like.shape[-2:]:
        target = F.interpolate(target, size=like.shape[-2:], mode="bilinear", align_corners=False)
    c, ct = like.shape[1], target.shape[1]
    if ct != c:
        target = target.expand(-1, c, -1, -1) if ct == 1 else target.mean(1, keepdim=True)
    return target


def low_frequency_mask(height: int, width: int, beta: float, device=None) -> torch.Tensor:
    """``(H, W)`` bool mask of the centred (fftshift-ed) low frequencies, half-width
    ``b = floor(beta * min(H, W))``, returned *un*-shifted (to index ``fft2``'s output)."""
    b = int(beta * min(height, width))
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    ch, cw = height // 2, width // 2
    mask[max(ch - b, 0) : ch + b + 1, max(cw - b, 0) : cw + b + 1] = True
    return torch.fft.ifftshift(mask)


def fourier_transfer(source: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """FDA's source-to-target image: ``source`` ``(B, C, H, W)`` with the low-frequency amplitude
    of ``target`` (same shape, paired row by row), in float32, clipped to [0, 1]."""
    src = source.float()
    fft_src = torch.fft.fft2(src)
    amp_trg = torch.fft.fft2(target.float()).abs()
    mask = low_frequency_mask(src.shape[-2], src.shape[-1], beta, device=src.device)
    amplitude = torch.where(mask, amp_trg, fft_src.abs())
    mixed = torch.polar(amplitude, fft_src.angle())
    return torch.fft.ifft2(mixed).real.clamp(0, 1).to(source.dtype)


def check_images(trainer, strategy: str) -> None:
    """Refuse data that is not images, and a grey source with a colour target (see above)."""
    source, target = trainer.data.source, trainer.target
    if source.modality != "image" or target is None or target.modality != "image":
        raise ValueError(
            f"{strategy} is pixel-level adaptation: it transforms source *images* into the "
            f"target's style, but this task holds {source.modality} inputs. Use a feature-level "
            "method (dann, bnm, shot, ...) for non-image data"
        )
    cs, ct = source.image_shape[0], target.image_shape[0]
    if cs < ct:
        raise ValueError(
            f"{strategy} renders source images in the target's colours, but the source images "
            f"have {cs} channel and the target's {ct}: the engine keeps the source batch's "
            "shape. Give the source domain RGB images (e.g. Domain(src.images.expand(-1, 3, -1, "
            "-1).contiguous(), src.labels, classes=src.classes)); the network sees the same "
            "inputs, since it expands grey images to RGB itself"
        )


class FDA:
    """Fourier domain adaptation (Yang & Soatto 2020): source images with target low-frequency amplitude.

    Args:
        beta: size of the swapped low-frequency square, as a fraction of the image side
            (in [0, 0.5]); the square has half-width ``floor(beta * min(H, W))``.
    """

    name = "fda"
    family = "adapt"
    needs_target = True  # the target batch gives the amplitude spectra
    needs_images = True  # transforms input images
    source_free = False  # it transforms the source batch

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = options.fraction("beta", beta)
        if self.beta > 0.5:
            raise ValueError(f"beta must be in [0, 0.5] (a fraction of the image side), got {beta}")

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> None:
        check_images(trainer, self.name)

    @tlkit.hookimpl
    def tlkit_transform_source(self, step) -> torch.Tensor | None:
        if step.x_target is None or not len(step.x):
            return None
        target = match_target(step.x_target, step.x)
        pick = torch.randint(
            0, len(target), (len(step.x),), generator=step.generator, device=step.generator.device
        )
        return fourier_transfer(step.x, target[pick.to(target.device)], self.beta)

    def preview(
        self,
        source: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``source`` images ``(B, C, H, W)`` with the low-frequency amplitude of target images
        drawn from ``target`` with ``generator`` (:class:`tlkit.hookspecs.SourcePreview`)."""
        if target is None:
            raise ValueError("fda takes its amplitude from target images: pass target=")
        target = match_target(target, source)
        pick = torch.randint(0, len(target), (len(source),), generator=generator)
        return fourier_transfer(source, target[pick], self.beta)
