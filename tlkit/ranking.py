r"""Rank pretrained backbones for a labelled task before fine-tuning any of them: LogME and LEEP.

Both scores (:mod:`tlkit.transferability`, where their formulas are) read a candidate's
*frozen* outputs on the task's labelled samples once -- no training -- so ranking several
candidates takes seconds where fine-tuning each takes minutes. Higher is better for both.

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

Any labelled Domain works: in-memory images, image files and shards (decoded in DataLoader
workers with each candidate's evaluation transform), feature rows and token ids (with
candidates that read them: ``"mlp"``, ``"text_bag"``, a run trained on such data). A named
backbone that cannot read the data is refused before any candidate is scored.
"""

from __future__ import annotations

import copy
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

from tlkit.backbone_choice import check_backbone, input_kind
from tlkit.backbones import Backbone, BackboneError, TransferModel, create_backbone
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.domain_outputs import domain_outputs, worker_count
from tlkit.run import Run, load
from tlkit.transferability import leep, log_evidence, logme

METRICS = ("logme", "leep")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


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


def _resolve(spec: Any, image_size: int | None, sized: dict[str, Any] | None = None) -> _Candidate:
    """Build the candidate; ``image_size`` (when given) is the side its backbone reads, except
    for a ``(name, {"input_size": ...})`` pair, which keeps its own. ``sized`` are the data's
    backbone options (an MLP's width, a text encoder's vocabulary) for named candidates."""
    cand = _build(spec, image_size, sized or {})
    if image_size is not None and not (isinstance(spec, tuple) and "input_size" in spec[1]):
        cand.model.backbone.input_size = image_size
    return cand


def _build(spec: Any, image_size: int | None, sized: dict[str, Any]) -> _Candidate:
    if isinstance(spec, (Run, nn.Module)):  # the caller's object: resize and move a copy
        spec = copy.deepcopy(spec)
    if isinstance(spec, Run):
        return _from_run(spec, "run")
    if isinstance(spec, TransferModel):
        head = spec.head if spec.task == "classification" else None
        return _Candidate(spec, head, "model", "" if head is not None else "no source classifier")
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping):
        name, options = spec
        options = {**sized, **options}
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
        return _named(str(spec), {**sized, **({} if image_size is None else {"input_size": image_size})})
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


def _check_candidates(domain: Domain, specs: list[Any], image_size: int | None) -> None:
    """Refuse, before any scoring, named backbones that cannot read ``domain`` and an
    ``image_size`` for data that is not images."""
    if image_size is not None and domain.modality != "image":
        raise DataError(
            f"rank_backbones: image_size={image_size} applies to images, but '{domain.name}' "
            f"holds {input_kind(domain)}; leave image_size out."
        )
    for spec in specs:
        name = spec[0] if isinstance(spec, tuple) and len(spec) == 2 else spec
        if isinstance(name, str) and not Path(name).is_file() and os.sep not in name:
            check_backbone(domain, name, "rank_backbones")


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
    num_workers: int | str = "auto",
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
            file) as a row with NaN scores and the reason; ``"raise"`` raises. A named backbone
            that cannot read the data (an image CNN on token ids) is refused either way, before
            any candidate is scored.
        num_workers: DataLoader workers decoding image files and shards (``"auto"``: up to 4);
            a file that cannot be read is left out of the scores.

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
    _check_candidates(domain, [spec for _, spec in named], image_size)
    sized = domain.backbone_kwargs()
    labels = domain.labels[idx]
    present = labels.unique()
    labels = torch.searchsorted(present, labels)  # ids 0..K'-1 over the classes present
    workers = 0 if domain.in_memory else worker_count(num_workers)
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
                cand = _resolve(spec, image_size, sized)
            cand.model.to(device)
            p = domain_outputs(
                cand.model, domain, idx, outputs=False, batch_size=batch_size, device=device,
                num_workers=workers,
            )  # fmt: skip
            feats, y = p.features, labels[torch.searchsorted(idx, p.indices)]
            row["logme"] = logme(feats, y, len(present))
            if cand.source_head is not None:
                with torch.no_grad():
                    head = cand.source_head.to(device).eval()
                    logits = torch.cat(
                        [
                            head(feats[i : i + 4096].to(device)).double().cpu()
                            for i in range(0, len(feats), 4096)
                        ]
                    )
                row["leep"] = leep(logits.softmax(dim=1), y)
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
