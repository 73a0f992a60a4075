r"""Transferability scores of frozen features for a labelled task: LogME and LEEP.

Both read a candidate's *frozen* outputs on the labelled samples once -- no training. Higher
is better for both; compare scores across candidates on the *same* data only. Ranking
candidate backbones with them is :func:`tlkit.rank_backbones` (:mod:`tlkit.ranking`).

**LogME** -- You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for
Transfer Learning", ICML 2021. Features :math:`F \in \mathbb{R}^{n \times D}` of the ``n``
labelled samples; for each class ``k`` the one-hot column :math:`y \in \{0, 1\}^n` is modelled as
a Bayesian linear regression :math:`y = F w + \varepsilon`, prior
:math:`w \sim \mathcal N(0, \alpha^{-1} I_D)`, noise :math:`\varepsilon \sim \mathcal N(0,
\beta^{-1} I_n)`. Its log evidence (marginal likelihood) is

.. math::

    \mathcal L(\alpha, \beta) = \tfrac n2 \log\beta + \tfrac D2 \log\alpha - \tfrac n2 \log 2\pi
    - \tfrac\beta2 \lVert F m - y \rVert^2 - \tfrac\alpha2 m^\top m - \tfrac12 \log\lvert A \rvert,
    \qquad A = \alpha I + \beta F^\top F,\; m = \beta A^{-1} F^\top y,

i.e. :math:`\log \mathcal N(y;\, 0,\, \beta^{-1} I_n + \alpha^{-1} F F^\top)`. It is maximised by
MacKay's fixed point: with :math:`\sigma_i` the eigenvalues of :math:`F^\top F`,
:math:`\gamma = \sum_i \beta\sigma_i / (\alpha + \beta\sigma_i)`,
:math:`\alpha \leftarrow \gamma / m^\top m`, :math:`\beta \leftarrow (n - \gamma) / \lVert F m -
y\rVert^2`. One SVD :math:`F = U \operatorname{diag}(s) V^\top` makes every iteration
:math:`O(\min(n, D))`: with :math:`z = U^\top y`, :math:`m^\top m = \sum_i (\beta s_i z_i /
(\alpha + \beta s_i^2))^2` and :math:`\lVert F m - y \rVert^2 = \sum_i (\alpha z_i / (\alpha +
\beta s_i^2))^2 + \lVert y \rVert^2 - \lVert z \rVert^2`. LogME is the maximised evidence per
sample, averaged over classes: :math:`\frac{1}{K} \sum_k \mathcal L_k(\alpha_k^*, \beta_k^*) / n`.
It needs only features, so it scores any backbone.

**LEEP** -- Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate
Transferability of Learned Representations", ICML 2020. It needs the *source classifier*:
:math:`\theta(x) \in \Delta^{Z}`, the source model's probabilities over its ``Z`` source classes
(ImageNet's 1000 for the EfficientNet-Lite0, the ten digits for a checkpoint trained on a bundled
source). With the empirical joint :math:`\hat P(y, z) = \frac1n \sum_{i: y_i = y} \theta_z(x_i)`
and conditional :math:`\hat P(y \mid z) = \hat P(y, z) / \sum_{y'} \hat P(y', z)`,

.. math:: \mathrm{LEEP} = \frac1n \sum_i \log \sum_z \hat P(y_i \mid z)\, \theta_z(x_i)
   \quad (\le 0).

A candidate without a source classifier (a random init, a torchvision/timm model whose head
could not be loaded) gets ``NaN`` and a note saying so.

Shapes: features ``(n, D)``, labels ``(n,)`` with ids ``0..K-1``, source probabilities
``(n, Z)``.

"""

from __future__ import annotations

import math

import torch

from tlkit.datasets.domain import DataError


def log_evidence(features: torch.Tensor, targets: torch.Tensor, alpha: float, beta: float) -> float:
    """The log evidence :math:`\\mathcal L(\\alpha, \\beta)` of one target column ``(n,)`` under
    the Bayesian linear model on ``features`` ``(n, D)`` (the module docstring's formula), in
    closed form through the SVD. Not divided by ``n``."""
    f = torch.as_tensor(features).double()
    y = torch.as_tensor(targets).double()
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    return _evidence(s**2, u.T @ y, float(y @ y), f.shape[0], f.shape[1], alpha, beta)


def _evidence(sigma, z, yy, n, d, alpha, beta) -> float:
    shrink = alpha + beta * sigma  # eigenvalues of A on the span of F's right singular vectors
    mm = float(((beta * sigma.sqrt() * z / shrink) ** 2).sum())
    res = float(((alpha * z / shrink) ** 2).sum()) + max(yy - float(z @ z), 0.0)
    log_det = float(shrink.log().sum()) + (d - len(sigma)) * math.log(alpha)
    return (
        0.5 * n * math.log(beta)
        + 0.5 * d * math.log(alpha)
        - 0.5 * n * math.log(2 * math.pi)
        - 0.5 * beta * res
        - 0.5 * alpha * mm
        - 0.5 * log_det
    )


def _maximise(sigma, z, yy, n, d, *, tol=1e-8, max_iter=1000) -> tuple[float, float, float]:
    """MacKay's fixed point for (alpha, beta); returns (evidence, alpha, beta)."""
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        shrink = alpha + beta * sigma
        gamma = float((beta * sigma / shrink).sum())
        mm = float(((beta * sigma.sqrt() * z / shrink) ** 2).sum())
        res = float(((alpha * z / shrink) ** 2).sum()) + max(yy - float(z @ z), 0.0)
        new_alpha = gamma / max(mm, 1e-300)
        new_beta = max(n - gamma, 1e-12) / max(res, 1e-300)
        new_alpha = min(max(new_alpha, 1e-12), 1e12)
        new_beta = min(max(new_beta, 1e-12), 1e12)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence(sigma, z, yy, n, d, alpha, beta), alpha, beta


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """LogME of ``features`` ``(n, D)`` for class ids ``labels`` ``(n,)``: the maximised log
    evidence per sample, averaged over the ``K`` one-hot target columns (You et al., ICML 2021).
    Higher is better. Classes with no sample are skipped."""
    f = torch.as_tensor(features).detach().cpu().double()
    y = torch.as_tensor(labels).detach().cpu().long()
    if f.ndim != 2 or y.shape != f.shape[:1]:
        raise DataError(
            f"features must be (n, D) and labels (n,); got {tuple(f.shape)}, {tuple(y.shape)}."
        )
    if len(y) < 2 or not torch.isfinite(f).all():
        raise DataError("LogME needs at least 2 samples and finite features.")
    n, d = f.shape
    k = int(num_classes or int(y.max()) + 1)
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    keep = s > s.max() * max(n, d) * torch.finfo(torch.float64).eps  # numerical rank
    u, sigma = u[:, keep], s[keep] ** 2
    scores = []
    for c in range(k):
        target = (y == c).double()
        if target.sum() == 0:
            continue
        evidence, _, _ = _maximise(sigma, u.T @ target, float(target.sum()), n, d)
        scores.append(evidence / n)
    return float(sum(scores) / len(scores))


def leep(source_probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """LEEP of the source model's probabilities ``(n, Z)`` for target labels ``(n,)``
    (Nguyen et al., ICML 2020): the mean log-likelihood of the labels under the "expected
    empirical predictor" :math:`\\sum_z \\hat P(y \\mid z)\\, \\theta_z(x)`. At most 0."""
    theta = torch.as_tensor(source_probabilities).detach().cpu().double()
    y = torch.as_tensor(labels).detach().cpu().long()
    if theta.ndim != 2 or y.shape != theta.shape[:1] or len(y) == 0:
        raise DataError(
            f"source probabilities must be (n, Z) and labels (n,); got {tuple(theta.shape)}, "
            f"{tuple(y.shape)}."
        )
    if theta.min() < 0 or (theta.sum(dim=1) - 1).abs().max() > 1e-3:
        raise DataError(
            "source probabilities must be rows of a softmax (non-negative, summing to 1); pass "
            "logits.softmax(dim=1)."
        )
    n = len(y)
    k = int(y.max()) + 1
    joint = torch.zeros(k, theta.shape[1], dtype=torch.float64).index_add_(0, y, theta) / n
    conditional = joint / joint.sum(dim=0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    eep = theta @ conditional.T  # (n, K)
    return float(eep.gather(1, y.view(-1, 1)).clamp_min(1e-300).log().mean())


__all__ = ["leep", "log_evidence", "logme"]
