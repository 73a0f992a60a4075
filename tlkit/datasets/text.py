"""A small offline text task: which library does a docstring come from?

Built from the source files that installed packages ship (parsed with :mod:`ast`, never
imported), so it needs no download. Two related labelled tasks share one tokeniser, so a model
pretrained on one transfers to the other (the two-stage recipe):

* ``docstrings`` -- the fine-tuning task: numpy, scikit-learn, matplotlib or scikit-image?
* ``docstrings-pretrain`` -- the pretraining task: which *sub-package* of those libraries
  (``numpy.linalg``, ``sklearn.linear_model``, ``matplotlib.axes``...), a finer label set, from a
  disjoint half of the source files (split by file, so no docstring of one task appears in the
  other). Features that tell sub-packages apart carry over to telling libraries apart, which is
  what makes pretrain -> fine-tune pay with a few labels per library.

Each sample is the docstring of one function, method or class (at least 8 words), with the
library's own names (``numpy``, ``np``, ``sklearn``...) removed so the task is about style and
vocabulary. The docstrings depend on the installed versions, which are part of the cache key.

:func:`tokenize` is the shared tokeniser: lower-cased words, numbers and punctuation, hashed
(CRC32) into ``vocab_size`` ids; id 0 pads. Hashing needs no vocabulary file, so any text --
yours included -- maps into the same id space: ``tlkit.Tokenizer()`` gives these ids (and
``domain.info["tokenizer"]`` describes it).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from .domain import DataError, Domain

VOCAB_SIZE = 2**15
MAX_LENGTH = 128
PADDING_ID = 0
PER_CLASS = 400
FILES_PER_PACKAGE = 160

#: (class name, import name, distribution name, tokens removed from its docstrings)
FINETUNE = (
    ("numpy", "numpy", "numpy", ("numpy", "np")),
    ("scikit-learn", "sklearn", "scikit-learn", ("sklearn", "scikit", "learn")),
    ("matplotlib", "matplotlib", "matplotlib", ("matplotlib", "mpl", "plt", "pyplot")),
    ("scikit-image", "skimage", "scikit-image", ("skimage", "ski", "scikit", "image")),
)
TASKS = {"docstrings": FINETUNE, "docstrings-pretrain": FINETUNE}
#: docstrings-pretrain: sub-packages with at least this many docstrings, at most this many each
MIN_PER_GROUP, PER_GROUP = 25, 120

_TOKEN = re.compile(r"[a-z_]+|\d+|[^\sa-z_\d]")
_SKIP_DIRS = {"tests", "test", "testing", "_vendor", "vendored", "__pycache__", "benchmarks"}


def words(text: str) -> list[str]:
    """Lower-cased word, number and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def token_id(word: str, vocab_size: int = VOCAB_SIZE) -> int:
    """The stable hashed id of one token, in ``1 .. vocab_size - 1`` (0 is padding)."""
    return 1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1)


def tokenize(
    texts: Sequence[str],
    *,
    max_length: int = MAX_LENGTH,
    vocab_size: int = VOCAB_SIZE,
    drop: Sequence[str] = (),
) -> torch.Tensor:
    """Texts -> int64 token ids ``(N, max_length)``, right-padded with 0 and truncated.

    ``drop`` lists tokens to remove first (e.g. the label leaking names).
    """
    if isinstance(texts, str):
        raise DataError("tokenize takes a list of texts, not one string; wrap it: [text].")
    if max_length < 1 or vocab_size < 2:
        raise DataError("tokenize needs max_length >= 1 and vocab_size >= 2.")
    dropped = set(drop)
    out = np.zeros((len(texts), max_length), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [token_id(w, vocab_size) for w in words(str(text)) if w not in dropped]
        ids = ids[:max_length]
        out[i, : len(ids)] = ids
    return torch.from_numpy(out)


def _package_files(import_name: str) -> list[str]:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the docstrings dataset needs the installed package '{import_name}' (a tlkit "
            "dependency); reinstall tlkit's dependencies."
        )
    files = []
    for root in spec.submodule_search_locations:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
            )
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return files


@functools.lru_cache(maxsize=8)
def _docstrings(import_name: str, seed: int) -> tuple[tuple[str, int, str], ...]:
    """``(group, half, docstring)`` for the docstrings (>= 8 words) of a spread sample of the
    package's source files: ``group`` is the sub-package (or top-level module), ``half`` 0/1
    splits the files between the two tasks by a hash of their path."""
    files = _package_files(import_name)
    rng = np.random.default_rng(seed)
    if len(files) > FILES_PER_PACKAGE:
        files = [files[i] for i in sorted(rng.choice(len(files), FILES_PER_PACKAGE, replace=False))]
    root = os.path.dirname(importlib.util.find_spec(import_name).origin or files[0])
    out = []
    for path in files:
        rel = os.path.relpath(path, root)
        parts = rel.split(os.sep)
        group = f"{import_name}.{parts[0] if len(parts) > 1 else parts[0][:-3]}"
        half = zlib.crc32(rel.encode()) % 2
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= 8:
                    out.append((group, half, doc))
    return tuple(out)


def versions(task: str) -> str:
    """The installed versions of the task's libraries (part of the cache key)."""
    parts = []
    for _, _, dist, _ in TASKS[task]:
        try:
            parts.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist}=missing")
    return ",".join(parts)


def build_docstrings(task: str, seed: int = 0) -> Domain:
    """One docstring task as a tensor domain of token ids (``(N, MAX_LENGTH)`` int64)."""
    spec = TASKS[task]
    rng = np.random.default_rng(seed)
    drop = sorted({w for _, _, _, names in spec for w in names})
    parsed = [_docstrings(imp, seed) for _, imp, _, _ in spec]
    counts: dict[str, int] = {}
    for docs in parsed:
        for d in {doc for _, _, doc in docs}:
            counts[d] = counts.get(d, 0) + 1
    groups: dict[str, list[str]] = {}
    if task == "docstrings":
        for (name, _, _, _), docs in zip(spec, parsed):
            groups[name] = sorted({d for _, half, d in docs if half == 0 and counts[d] == 1})
        per_class = PER_CLASS
    else:
        for docs in parsed:
            for group, half, d in docs:
                if half == 1 and counts[d] == 1:
                    groups.setdefault(group, []).append(d)
        groups = {
            g: sorted(set(v)) for g, v in sorted(groups.items()) if len(set(v)) >= MIN_PER_GROUP
        }
        per_class = PER_GROUP
    texts, labels = [], []
    for c, (name, docs) in enumerate(groups.items()):
        if len(docs) < 20:
            raise DataError(f"{task}: only {len(docs)} docstrings found for {name}.")
        pick = rng.permutation(len(docs))[:per_class]
        texts += [docs[i] for i in pick]
        labels += [c] * len(pick)
    order = rng.permutation(len(texts))
    tokens = tokenize([texts[i] for i in order], drop=drop)
    return Domain(
        labels=torch.as_tensor(np.asarray(labels)[order]),
        classes=tuple(groups),
        name=task,
        inputs=tokens,
        info={"vocab_size": VOCAB_SIZE, "padding_id": PADDING_ID, "max_length": MAX_LENGTH,
              "tokenizer": _tokenizer(drop)},
    )  # fmt: skip


def _tokenizer(drop: Sequence[str]) -> dict:
    """The description of :func:`tokenize`'s ids as a :class:`tlkit.Tokenizer` (it gives the
    same ids), so a run trained on these tasks predicts raw strings."""
    # tlkit.Tokenizer.to_dict()'s layout, written out: the data layer does not import the API
    return {"kind": "hashed", "vocabulary": None, "vocab_size": VOCAB_SIZE,
            "max_length": MAX_LENGTH, "drop": sorted(set(drop))}  # fmt: skip
