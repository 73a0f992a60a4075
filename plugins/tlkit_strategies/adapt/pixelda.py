r"""PixelDA: a generator renders labelled source images in the target's style, against a
discriminator; the classifier learns from the rendered images.

Bousmalis, Silberman, Dohan, Erhan & Krishnan, "Unsupervised Pixel-Level Domain Adaptation with
Generative Adversarial Networks", CVPR 2017 (98.2% on MNIST -> MNIST-M, against 76.7% for
DANN).

A generator :math:`G(x^s, z; \theta_G)` maps a source image and a noise vector
:math:`z \sim \mathcal{U}(-1, 1)^{n_z}` to an image of the target's style; a discriminator
:math:`D(x; \theta_D)` separates generated images from real target images; the task classifier
:math:`T` learns from the generated images with the source labels. The game is

.. math::
    \min_{\theta_G, \theta_T} \max_{\theta_D}\;
      \alpha\, \mathcal{L}_d(D, G) + \beta\, \mathcal{L}_t(G, T),

.. math::
    \mathcal{L}_d = \mathbb{E}_{x^t}[\log D(x^t)] + \mathbb{E}_{x^s, z}[\log(1 - D(G(x^s, z)))],
    \qquad
    \mathcal{L}_t = \mathbb{E}_{x^s, y^s, z}\big[-{y^s}^\top \log T(G(x^s, z))
      - {y^s}^\top \log T(x^s)\big],

optimised by alternating steps, as in the paper: the main step trains :math:`G` and :math:`T`
on the task loss of the generated images (the engine's supervised loss, since
``tlkit_transform_source`` returns :math:`G(x^s, z)`) plus the generator's non-saturating
adversarial loss :math:`\alpha\,\mathrm{BCE}(D(G(x^s, z)), 1)` (term ``pixelda_generator``;
:math:`D` scores the generated images in one batch with the real target images, as in its own
step, so that its BatchNorm normalises both steps alike) and,
with ``source_weight > 0``, the classifier's loss on the original source images (term
``pixelda_source``, one extra forward pass); the second step trains :math:`D` on
:math:`\mathrm{BCE}(D(x^t), 1) + \mathrm{BCE}(D(G(x^s, z)^{\text{detached}}), 0)` (term
``pixelda_discriminator``), by the engine's second optimiser (``own_optimizer``; with ``gan_lr``
each of :math:`G` and :math:`D` has an Adam optimiser of its own, and :math:`D` takes ``d_steps``
steps per step of :math:`G`). Optionally
(``content_weight``) a content-similarity loss keeps :math:`G(x^s, z)` close to :math:`x^s` up to
a global shift (the paper's PMSE, without a mask):

.. math::
    \mathcal{L}_c = \frac{1}{k}\lVert x^s - G \rVert_2^2 - \frac{1}{k^2}\big((x^s - G)^\top
      \mathbf{1}\big)^2, \quad k = C H W.

Architecture (the paper's, narrower for CPU budgets: width 16 and 2 residual blocks where the
paper has 64 and 6): the noise is mapped by a linear layer to one extra input channel;
``conv3x3(C + 1 -> w) -> ReLU``, ``blocks`` residual blocks ``[conv3x3 -> BN -> ReLU -> conv3x3
-> BN] + skip``, ``conv3x3(w -> C) -> tanh``. The paper renders the image from the tanh; by
default here the generator is residual, ``clamp(x + tanh(.), 0, 1)`` starting as the identity
(``residual=True``): on digits->digits-m (seed 0, 296 steps) the paper's form reached 50.4%
and the residual one 54.0% (source-only 34.5%), because a generator that starts from noise
hands the classifier unreadable digits for most of a short run. The discriminator: ``conv3x3
stride 2`` layers ``C -> w -> 2w -> 4w`` with BatchNorm (after the first), LeakyReLU(0.2),
dropout on the input and Gaussian noise (``noise``, the paper's 0.2) on every layer's input,
global average pooling and a linear output; it sees images in [0, 1]. Weights: ``adversarial``
1 against the classifier's loss 1, as the paper's alpha ~ beta.

Augmentation: the engine augments the source batch (``augment=``, e.g. ``"colour"``) before
any strategy sees it, so :math:`x^s` above is the augmented batch: the generator renders the
augmented images, the task loss reads its renderings and ``pixelda_source`` the augmented images
themselves. A run with ``augment="colour"`` therefore trains on other images than colour
randomisation alone, though it may end close to it: where the augmentation already covers the
shift, little is left for the generator to add.

Channels: the generated images keep the source batch's shape ``(B, C, H, W)``; with a grey
source and a colour target (MNIST -> MNIST-M), give the source domain RGB images (see
:func:`tlkit_strategies.adapt.fda.check_images`, which refuses the mix with that advice).

Shapes: source ``(B, C, H, W)`` and noise ``(B, n_z)`` -> generated ``(B, C, H, W)`` in [0, 1];
target ``(B_t, C, H, W)``; discriminator ``(N, C, H, W) -> (N,)`` logits. Logged:
``pixelda_generator``, ``pixelda_source``, ``pixelda_content`` (when on),
``pixelda_discriminator`` and ``pixelda_d_accuracy`` (of the discriminator, before its step).
:func:`tlkit.plots.source_to_target_grid` draws source images next to their generated versions
(through :meth:`PixelDA.preview`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import tlkit
from tlkit import options
from tlkit_strategies.adapt.fda import check_images, match_target


class ResidualBlock(nn.Module):
    """``x + BN(conv(ReLU(BN(conv(x)))))``: ``(B, w, H, W) -> (B, w, H, W)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """``G(x, z)``: images ``(B, C, H, W)`` in [0, 1] and noise ``(B, n_z)`` -> ``(B, C, H, W)``
    in [0, 1]. The noise becomes one extra input channel through a linear layer. ``residual``:
    ``clamp(x + tanh(out), 0, 1)`` with the last convolution initialised to 0 (the identity at
    the start); otherwise ``(tanh(out) + 1) / 2``, as in the paper."""

    def __init__(
        self,
        channels: int,
        size: tuple[int, int],
        noise_dim: int,
        width: int,
        blocks: int,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.noise_dim = noise_dim
        self.size = tuple(size)
        extra = 1 if noise_dim > 0 else 0
        self.noise = nn.Linear(noise_dim, size[0] * size[1]) if noise_dim > 0 else None
        self.stem = nn.Sequential(nn.Conv2d(channels + extra, width, 3, padding=1), nn.ReLU(True))
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        if residual:  # start as the identity: the classifier sees the digits from step 0
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = x * 2 - 1  # [-1, 1], as the paper's tanh output
        if self.noise is not None:
            if z is None:
                z = torch.zeros(len(x), self.noise_dim, device=x.device, dtype=x.dtype)
            plane = self.noise(z.to(x.dtype)).view(len(x), 1, *self.size)
            h = torch.cat([h, plane], 1)
        h = self.blocks(self.stem(h))
        if self.residual:
            return (x + torch.tanh(self.out(h))).clamp(0, 1)
        return (torch.tanh(self.out(h)) + 1) / 2


class GaussianNoise(nn.Module):
    """Adds ``N(0, std^2)`` noise in training mode (like dropout, from the global generator,
    which the engine seeds for every step); the identity in evaluation."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.std if self.training and self.std > 0 else x


class Discriminator(nn.Module):
    """Real target vs generated: images ``(N, C, H, W)`` in [0, 1] -> logits ``(N,)``.

    ``noise``: Gaussian noise of that standard deviation added to the input of every layer, as
    in the paper (it keeps the discriminator from winning outright). Trained by the engine's
    second optimiser only (``own_optimizer``)."""

    own_optimizer = True

    def __init__(self, channels: int, width: int, dropout: float = 0.1, noise: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        widths = (channels, width, 2 * width, 4 * width)
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            if noise > 0:
                layers.append(GaussianNoise(noise))
            layers.append(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x * 2 - 1).mean((2, 3))
        return self.out(h).squeeze(1)


class PixelDAModules(nn.Module):
    """What ``tlkit_setup`` returns: the generator (main optimiser) and the discriminator
    (second optimiser), saved in checkpoints together."""

    def __init__(self, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator


def content_similarity(source: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """The paper's pairwise MSE (without a mask): ``mean(d^2) - mean(d)^2`` per image of
    ``d = source - generated`` ``(B, C, H, W)``, averaged over the batch (a global shift is
    free)."""
    d = (source.float() - generated.float()).flatten(1)
    return (d.pow(2).mean(1) - d.mean(1).pow(2)).mean()


class PixelDA:
    """PixelDA (Bousmalis et al. 2017): a GAN renders source images in the target's style.

    Args:
        adversarial: weight ``alpha`` of the generator's adversarial loss (> 0).
        source_weight: weight of the classifier's loss on the original source images (>= 0;
            the paper trains the classifier on both; 0 skips the extra forward pass).
        content_weight: weight of the content-similarity loss (>= 0; 0 = off, as for MNIST-M).
        noise_dim: size of the noise vector ``z`` (>= 0; 0 = a deterministic generator).
        width: channels of the generator's convolutions (and of the discriminator's first).
        blocks: residual blocks in the generator.
        dropout: dropout on the discriminator's input (in [0, 1)).
        residual: the generator adds a residual to its input and starts as the identity
            (``False``: it renders the image from scratch, as in the paper).
        noise: standard deviation of the Gaussian noise added to the input of each of the
            discriminator's layers (>= 0; the paper uses 0.2).
        gan_lr: ``None`` (default): the generator trains with the model's optimiser and the
            discriminator with a second one of the run's kind, rate and schedule. A number: each
            gets an Adam optimiser of its own at this constant rate (:class:`tlkit.OwnOptimizer`),
            with ``betas``, as GANs are usually trained.
        betas: Adam's ``(beta1, beta2)`` with ``gan_lr`` (``beta1 = 0.5``, the GAN default).
        d_steps: discriminator steps per generator step (with ``gan_lr``; >= 1).
    """

    name = "pixelda"
    family = "adapt"
    needs_target = True  # the discriminator sees real target images
    needs_images = True  # generates input images
    source_free = False  # it renders the source batch

    def __init__(
        self,
        adversarial: float = 1.0,
        source_weight: float = 1.0,
        content_weight: float = 0.0,
        noise_dim: int = 10,
        width: int = 16,
        blocks: int = 2,
        dropout: float = 0.1,
        residual: bool = True,
        noise: float = 0.2,
        gan_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        d_steps: int = 1,
    ) -> None:
        self.residual = options.boolean("residual", residual)
        self.noise = options.non_negative("noise", noise)
        self.adversarial = options.positive("adversarial", adversarial)
        self.source_weight = options.non_negative("source_weight", source_weight)
        self.content_weight = options.non_negative("content_weight", content_weight)
        self.noise_dim = options.integer("noise_dim", noise_dim, minimum=0)
        self.width = options.integer("width", width, minimum=1)
        self.blocks = options.integer("blocks", blocks, minimum=0)
        self.dropout = options.fraction("dropout", dropout, closed_top=False)
        self.gan_lr = options.optional(options.positive, "gan_lr", gan_lr)
        self.d_steps = options.integer("d_steps", d_steps, minimum=1)
        if self.gan_lr is None and self.d_steps != 1:
            raise tlkit.StrategyOptionError(
                f"d_steps={self.d_steps} needs gan_lr= (the discriminator's own optimiser); "
                "without it the discriminator steps once per step, with the run's optimiser",
                "d_steps",
                d_steps,
                "1 without gan_lr",
            )
        try:
            self.settings = (
                None
                if self.gan_lr is None
                else {
                    "generator": tlkit.OwnOptimizer(lr=self.gan_lr, betas=betas, loss="main"),
                    "discriminator": tlkit.OwnOptimizer(
                        lr=self.gan_lr, betas=betas, steps=self.d_steps
                    ),
                }
            )
        except ValueError as exc:
            raise tlkit.StrategyOptionError(str(exc), "betas", betas, "two numbers in [0, 1)") from None
        self.modules: PixelDAModules | None = None
        # (index, x, G(x, z), real target images shaped like G's output)
        self._step: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def state_dict(self) -> dict:
        return {}  # all state is in the modules, checkpointed with their weights

    def load_state_dict(self, state: dict) -> None:
        pass

    @tlkit.hookimpl
    def tlkit_setup(self, trainer) -> PixelDAModules:
        check_images(trainer, self.name)
        c, h, w = trainer.data.source.image_shape
        generator = Generator(c, (h, w), self.noise_dim, self.width, self.blocks, self.residual)
        discriminator = Discriminator(c, self.width, self.dropout, self.noise)
        if self.settings is not None:  # each its own Adam; else the run's optimisers
            generator.own_optimizer = self.settings["generator"]
            discriminator.own_optimizer = self.settings["discriminator"]
        self.modules = PixelDAModules(generator, discriminator)
        return self.modules

    def generate(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``G(x, z)`` for source images ``x`` ``(B, C, H, W)`` in [0, 1], ``z`` drawn from
        ``generator`` (uniform in [-1, 1])."""
        g = self.modules.generator
        z = None
        if self.noise_dim:
            device = generator.device if generator is not None else x.device
            z = torch.rand(len(x), self.noise_dim, generator=generator, device=device) * 2 - 1
            z = z.to(x.device)
        return g(x, z)

    def preview(
        self,
        source: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``G(x, z)`` of ``source`` images on CPU, the generator in eval mode, ``z`` drawn from
        ``generator`` (:class:`tlkit.hookspecs.SourcePreview`; ``target`` is not needed)."""
        if self.modules is None:
            raise ValueError("pixelda has no generator before a run sets it up: train it first")
        module = self.modules.generator
        device = next(module.parameters()).device
        was = module.training
        module.eval()
        try:
            return self.generate(source.to(device), generator).cpu()
        finally:
            module.train(was)

    @tlkit.hookimpl
    def tlkit_transform_source(self, step) -> torch.Tensor | None:
        if not len(step.x):
            return None
        fake = self.generate(step.x, step.generator)
        real = match_target(step.x_target, fake).float()  # once per step, for both D passes
        self._step = (step.index, step.x, fake, real)
        return fake.to(step.x.dtype)

    def _this_step(self, step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's source images, their generated versions and the real target images
        shaped like them (both of D's passes read them)."""
        if self._step is None or self._step[0] != step.index:
            raise RuntimeError("pixelda: the step's source batch was not transformed by pixelda")
        return self._step[1], self._step[2], self._step[3]

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        x, fake, real = self._this_step(step)
        d = self.modules.discriminator
        # D sees real and generated images in one batch, as in its own step: its BatchNorm (in
        # training mode) would otherwise normalise a generated-only batch by that batch's
        # statistics and drop whatever all the images share (one colour scheme for every digit),
        # so the generator would train against a different function from the trained D.
        logits = d(torch.cat([real, fake.float()]))[len(real) :]
        terms = {
            "pixelda_generator": self.adversarial
            * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        }
        if self.source_weight > 0:
            _, source_logits = step.forward(x, domain="source")
            ce = F.cross_entropy(source_logits.float(), step.y)
            terms["pixelda_source"] = self.source_weight * ce
        if self.content_weight > 0:
            terms["pixelda_content"] = self.content_weight * content_similarity(x, fake)
        return terms

    @tlkit.hookimpl
    def tlkit_adversary_losses(self, step) -> dict[str, torch.Tensor] | None:
        _, fake, real = self._this_step(step)
        d = self.modules.discriminator
        logits = d(torch.cat([real, fake.detach().float()]))
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits.device)
        step.log("pixelda_d_accuracy", ((logits.detach() > 0).float() == labels).float().mean())
        return {"pixelda_discriminator": F.binary_cross_entropy_with_logits(logits, labels)}

    @torch.no_grad()
    def plot(self, images: torch.Tensor, n: int = 8, seed: int = 0, **kwargs):
        """:func:`tlkit.plots.source_to_target_grid` of this strategy's generator (see there;
        imported when called: loading the strategy must not import pyplot)."""
        from tlkit.plots import source_to_target_grid

        return source_to_target_grid(self, images, n=n, seed=seed, **kwargs)
