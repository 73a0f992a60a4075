r"""Rank pretrained backbones for a labelled task before fine-tuning any of them: LogME and LEEP.

Both scores read a candidate's *frozen* outputs on the target's labelled samples once -- no
training -- so ranking several candidates takes seconds where fine-tuning each takes minutes.
Higher is better for both; compare scores across candidates on the *same* data only.

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

Measured (``benchmarks/results/rank_backbones.md``: six offline candidates, 100 labelled images
of digits-m / digits / synth-digits, 3 fine-tuning seeds): both scores rank the best fine-tuned
candidate first on all three targets; Kendall's tau with the fine-tuned accuracy 0.73 / 0.33 /
0.60 (LogME) and 0.60 / 0.20 / 0.60 (LEEP); ranking takes 1-3 s where fine-tuning the six
candidates once takes 78-97 s on a 2-core CPU.

Candidates (:func:`rank_backbones`): backbone names (``"efficientnet_lite0"`` with its offline
ImageNet weights and head; ``"small_cnn"``, a random init, as a from-scratch reference;
torchvision names and ``"timm:<name>"`` where the weights are cached), checkpoint files saved with
:meth:`tlkit.Run.save` (their head is the source classifier), :class:`tlkit.Run` objects,
``nn.Module`` backbones, or ``(name, {create_backbone options})`` pairs; a dict gives them
display names.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tlkit.backbones import Backbone, BackboneError, TransferModel, create_backbone
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.engine.evaluate import predict_features
from tlkit.run import Run, load

METRICS = ("logme", "leep")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


# -- the two scores ------------------------------------------------------------------------------
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


# -- candidates ----------------------------------------------------------------------------------
@dataclass
class _Candidate:
    model: TransferModel
    source_head: nn.Module | None
    kind: str
    note: str = ""


class _NoHead(nn.Module):
    out_features = 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - unused
        return features


def _imagenet_head(name: str, num_features: int, **options: Any) -> tuple[nn.Module | None, str]:
    """The 1000-way ImageNet classifier of a named pretrained backbone, or (None, why)."""
    try:
        if name == "efficientnet_lite0":
            from tlkit.backbones.efficientnet import package_state_dict

            weight, bias = list(package_state_dict().values())[-2:]
            head = nn.Linear(weight.shape[1], weight.shape[0])
            head.load_state_dict({"weight": weight, "bias": bias})
        elif name.startswith("timm:"):
            import timm

            full = timm.create_model(name.split(":", 1)[1], pretrained=True, **options)
            head = full.get_classifier()
        else:
            from torchvision.models import get_model

            from tlkit.backbones.torchvision_models import (
                default_weights,
                load_pretrained_state_dict,
            )

            full = get_model(name, weights=None)
            full.load_state_dict(load_pretrained_state_dict(name, default_weights(name)))
            head = _last_linear(full)
    except Exception as exc:  # weights missing, unusual architecture: LogME still works
        return None, f"no source classifier ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(head, nn.Linear) or head.in_features != num_features:
        return None, "no source classifier (its head does not read the backbone's features)"
    return head.eval(), ""


def _last_linear(model: nn.Module) -> nn.Module | None:
    """The final Linear classifier of a torchvision model (the layer tlkit strips)."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            return head
        if isinstance(head, nn.Sequential):
            linear = [m for m in head if isinstance(m, nn.Linear)]
            if linear:
                return linear[-1]
    return None


def _from_run(run: Run, kind: str) -> _Candidate:
    model = run.model
    if model.task != "classification":
        return _Candidate(model, None, kind, "no source classifier (a regression head)")
    return _Candidate(model, model.head, kind)


def _resolve(spec: Any, image_size: int | None) -> _Candidate:
    """Build the candidate; ``image_size`` (when given) is the side its backbone reads, except
    for a ``(name, {"input_size": ...})`` pair, which keeps its own."""
    cand = _build(spec, image_size)
    if image_size is not None and not (isinstance(spec, tuple) and "input_size" in spec[1]):
        cand.model.backbone.input_size = image_size
    return cand


def _build(spec: Any, image_size: int | None) -> _Candidate:
    if isinstance(spec, (Run, nn.Module)):  # the caller's object: resize and move a copy
        spec = copy.deepcopy(spec)
    if isinstance(spec, Run):
        return _from_run(spec, "run")
    if isinstance(spec, TransferModel):
        head = spec.head if spec.task == "classification" else None
        return _Candidate(spec, head, "model", "" if head is not None else "no source classifier")
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
        name, options = spec
        options = dict(options)
        if image_size is not None:
            options.setdefault("input_size", image_size)
        return _named(name, options)
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_file():
            return _from_run(load(path), "checkpoint")
        if path.suffix in CHECKPOINT_SUFFIXES or os.sep in str(spec):
            raise DataError(
                f"checkpoint file {str(spec)!r} does not exist; save one with run.save(path), "
                "or pass a backbone name."
            )
        return _named(str(spec), {} if image_size is None else {"input_size": image_size})
    if isinstance(spec, nn.Module):
        backbone = spec if isinstance(spec, Backbone) else create_backbone(spec)
        return _Candidate(
            TransferModel(backbone, _NoHead()), None, "module", "no source classifier"
        )
    raise DataError(
        f"cannot rank a {type(spec).__name__}: pass backbone names, checkpoint paths saved "
        "with run.save, tlkit Runs, nn.Modules or (name, {options}) pairs."
    )


def _named(name: str, options: dict[str, Any]) -> _Candidate:
    backbone = create_backbone(name, **options)
    model = TransferModel(backbone, _NoHead())
    if not backbone.pretrained:
        return _Candidate(model, None, "random init", "random init: no pretrained weights or head")
    if options.get("weights") is not None:
        return _Candidate(model, None, "weights", "weights file without a source classifier")
    extra = {k: v for k, v in options.items() if k not in ("input_size", "pretrained")}
    head, why = _imagenet_head(backbone.name, backbone.num_features, **extra)
    return _Candidate(model, head, "pretrained", why)


def _display_name(spec: Any) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    if isinstance(spec, tuple):
        return str(spec[0])
    if isinstance(spec, Run):
        return f"run({spec.spec.get('backbone', '?')})"
    return type(spec).__name__


# -- the ranking ---------------------------------------------------------------------------------
@dataclass(repr=False)
class BackboneRanking:
    """Candidates with their LogME and LEEP scores on one labelled task, best first.

    ``rows`` are dicts with ``candidate``, ``logme``, ``leep`` (NaN where it cannot be
    computed), ``features`` (D), ``source_classes`` (Z, 0 without a source classifier),
    ``input_size``, ``seconds`` (build + features + scores) and ``note``. Sorted by ``by``
    (NaN last). ``to_dataframe()`` gives a pandas DataFrame; ``best`` the top candidate's name.
    """

    rows: list[dict[str, Any]]
    by: str
    data: str
    samples: int
    num_classes: int
    seconds: float
    columns: tuple[str, ...] = field(
        default=(
            "candidate",
            "logme",
            "leep",
            "features",
            "source_classes",
            "input_size",
            "seconds",
            "note",
        )
    )

    @property
    def best(self) -> str:
        """The name of the top candidate (by :attr:`by`)."""
        return self.rows[0]["candidate"]

    def scores(self, metric: str | None = None) -> dict[str, float]:
        """``{candidate: score}`` for ``metric`` (default :attr:`by`)."""
        metric = metric or self.by
        return {r["candidate"]: r[metric] for r in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, key: int | str) -> dict[str, Any]:
        if isinstance(key, int):
            return self.rows[key]
        for row in self.rows:
            if row["candidate"] == key:
                return row
        raise KeyError(f"no candidate {key!r}; candidates: {[r['candidate'] for r in self.rows]}")

    def to_dataframe(self):
        """The table as a ``pandas.DataFrame`` (pandas is needed for this one method)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.columns))

    def _cells(self) -> list[list[str]]:
        def fmt(v: Any, col: str) -> str:
            if isinstance(v, float):
                if v != v:
                    return "n/a"
                return f"{v:.1f}" if col == "seconds" else f"{v:.4f}"
            return "" if v is None else str(v)

        return [[fmt(r[c], c) for c in self.columns] for r in self.rows]

    def _summary(self) -> str:
        return (
            f"BackboneRanking on '{self.data}' ({self.samples} labelled samples, "
            f"{self.num_classes} classes), best first by {self.by}; {self.seconds:.1f} s"
        )

    def __repr__(self) -> str:
        rows = [list(self.columns), *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns) - 1)]
        lines = [
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))
            )
            + ("  " + r[-1] if r[-1] else "")
            for r in rows
        ]
        return "\n".join([self._summary(), *lines])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
            for row in self._cells()
        )
        return (
            f"<table><caption>{escape(self._summary())}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )


def _labelled_images(
    data: Domain | DomainPair, max_samples: int | None, seed: int
) -> tuple[Domain, torch.Tensor]:
    domain = data.source if isinstance(data, DomainPair) else data
    if not isinstance(domain, Domain):
        raise DataError(
            f"rank_backbones needs a labelled tlkit.datasets.Domain or task, got "
            f"{type(data).__name__}."
        )
    if domain.task != "classification":
        raise DataError(
            f"'{domain.name}' is a regression domain; LogME and LEEP here score classification "
            "labels."
        )
    idx = (domain.labels != UNLABELLED).nonzero().flatten()
    if len(torch.unique(domain.labels[idx])) < 2:
        raise DataError(
            f"'{domain.name}' has {len(idx)} labelled samples in fewer than 2 classes; ranking "
            "needs labels of at least two classes."
        )
    if max_samples is not None and len(idx) > max_samples:
        g = torch.Generator().manual_seed(seed)  # a class-stratified subsample
        labels = domain.labels[idx]
        share = max_samples / len(idx)
        picked = []
        for c in labels.unique():
            members = idx[labels == c]
            take = max(1, round(share * len(members)))
            picked.append(members[torch.randperm(len(members), generator=g)[:take]])
        idx = torch.cat(picked).sort().values
    return domain, idx


def rank_backbones(
    data: Domain | DomainPair,
    candidates: Iterable[Any] | Mapping[str, Any],
    *,
    by: str = "logme",
    image_size: int | None = None,
    max_samples: int | None = 1000,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    errors: str = "skip",
    seed: int = 0,
    progress: bool = True,
) -> BackboneRanking:
    """Score each candidate backbone's frozen features on the labelled samples of ``data``
    with LogME and LEEP, and rank them best first -- which pretrained model to fine-tune.

    Args:
        data: a labelled Domain, or a task (its labelled source is scored).
        candidates: backbone names (``"efficientnet_lite0"``, torchvision names,
            ``"timm:<name>"``, ``"small_cnn"`` as a random-init reference), paths of
            checkpoints saved with ``run.save``, :class:`tlkit.Run` objects, ``nn.Module``
            backbones, ``(name, {create_backbone options})`` pairs; or a dict of display name ->
            any of these.
        by: ``"logme"`` (every candidate) or ``"leep"`` (needs a source classifier).
        image_size: the side images are resized to for every candidate (use the size you will
            fine-tune at); ``None`` keeps each candidate's own (224 for ImageNet names, the
            stored size for checkpoints).
        max_samples: a class-stratified subsample of at most this many labelled samples
            (``None``: all); both scores settle with a few hundred.
        device: where features are computed (default: CUDA when available, else CPU).
        seed: draws the subsample and any random init (the global RNG is left as it was).
        errors: ``"skip"`` keeps a candidate that cannot be built (weights not cached, bad
            file) as a row with NaN scores and the reason; ``"raise"`` raises.

    Returns:
        A :class:`BackboneRanking` (printable, ``_repr_html_`` in notebooks, ``to_dataframe()``).
    """
    if by not in METRICS:
        raise ValueError(f"by must be one of {list(METRICS)}, got {by!r}.")
    if errors not in ("skip", "raise"):
        raise ValueError(f"errors must be 'skip' or 'raise', got {errors!r}.")
    if isinstance(candidates, (str, os.PathLike)) or not isinstance(candidates, Iterable):
        candidates = [candidates]
    named = (
        list(candidates.items())
        if isinstance(candidates, Mapping)
        else [(_display_name(c), c) for c in candidates]
    )
    if not named:
        raise ValueError("no candidates to rank; pass a list of backbone names or checkpoints.")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}; pass a dict to name them.")
    domain, idx = _labelled_images(data, max_samples, seed)
    labels = domain.labels[idx]
    present = labels.unique()
    labels = torch.searchsorted(present, labels)  # ids 0..K'-1 over the classes present
    images = domain.images[idx]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    start_all = time.perf_counter()
    for name, spec in tqdm(named, desc="ranking backbones", disable=not progress):
        start = time.perf_counter()
        row: dict[str, Any] = dict.fromkeys(("logme", "leep"), float("nan")) | {
            "candidate": name,
            "features": 0,
            "source_classes": 0,
            "input_size": None,
        }
        try:
            with torch.random.fork_rng(devices=[]):  # a random init is the same every time
                torch.manual_seed(seed)
                cand = _resolve(spec, image_size)
            cand.model.to(device)
            feats = predict_features(cand.model, images, batch_size=batch_size, device=device)
            row["logme"] = logme(feats, labels, len(present))
            if cand.source_head is not None:
                with torch.no_grad():
                    head = cand.source_head.to(device).eval()
                    logits = torch.cat(
                        [
                            head(feats[i : i + 4096].to(device)).double().cpu()
                            for i in range(0, len(feats), 4096)
                        ]
                    )
                row["leep"] = leep(logits.softmax(dim=1), labels)
                row["source_classes"] = int(logits.shape[1])
            row["features"] = int(feats.shape[1])
            row["input_size"] = cand.model.backbone.input_size
            row["note"] = cand.note
        except (BackboneError, DataError, OSError, RuntimeError, ValueError) as exc:
            if errors == "raise":
                raise
            row["note"] = f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        row["seconds"] = time.perf_counter() - start
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple[bool, float]:
        v = r[by]
        return (v != v, -v if v == v else 0.0)

    rows.sort(key=key)
    return BackboneRanking(
        rows=rows,
        by=by,
        data=domain.name,
        samples=len(idx),
        num_classes=len(present),
        seconds=time.perf_counter() - start_all,
    )


__all__ = ["METRICS", "BackboneRanking", "leep", "log_evidence", "logme", "rank_backbones"]
