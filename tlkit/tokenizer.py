"""Text -> token ids: the :class:`Tokenizer` a text run trains with, saves and predicts with.

Two kinds, one interface (``encode``, ``domain``, ``save`` / ``load``):

* **hashed** (``Tokenizer()``): every lower-cased word, number and punctuation mark is hashed
  (CRC32) into ``vocab_size`` ids. No vocabulary to fit, and any text -- yours included -- lands
  in the id space of the bundled ``docstrings`` tasks, so an encoder pretrained on them
  (``tlkit.fit_two_stage("docstrings-pretrain", mine, "text_lstm")``) reads your sentences with
  the embeddings it learned.
* **fitted** (``Tokenizer.fit(corpus)``): a vocabulary of the corpus' most frequent words (id 0
  pads, 1 is an unknown word); compact, but its ids mean nothing to an encoder trained with
  another tokenizer.

``tok.domain(texts, labels)`` gives the labelled :class:`~tlkit.datasets.Domain` ``tlkit.fit``
trains on; the tokenizer travels in ``domain.info``, the text backbones keep it, and
``Run.save`` / ``tlkit.load`` carry it, so a loaded run predicts raw strings:
``run.predict(["the order never arrived"])``.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.datasets.domain import DataError, Domain
from tlkit.datasets.sources import from_tensors

#: The id range and length of the bundled ``docstrings`` tasks' hashed ids.
HASHED_VOCAB_SIZE = 2**15
DEFAULT_MAX_LENGTH = 128
PADDING_ID = 0
UNKNOWN_ID = 1
_TOKEN = re.compile(r"[a-z_]+|\d+|[^\sa-z_\d]")
_KINDS = ("hashed", "vocabulary")


def words(text: str) -> list[str]:
    """Lower-cased word, number and punctuation tokens (the bundled tasks' rule)."""
    return _TOKEN.findall(str(text).lower())


def hashed_id(word: str, vocab_size: int = HASHED_VOCAB_SIZE) -> int:
    """The stable hashed id of one token, in ``1 .. vocab_size - 1`` (0 is padding)."""
    return 1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1)


class Tokenizer:
    """Texts -> right-padded int64 ids ``(N, max_length)``; padding id 0.

    Args:
        vocabulary: the words, most frequent first (ids 2, 3, ...); ``None`` hashes words
            into ``vocab_size`` ids instead, the bundled ``docstrings`` tasks' id space.
        max_length: ids kept per text (longer texts are truncated, shorter ones padded).
        vocab_size: the id range of a hashed tokenizer (ignored with a vocabulary).
        drop: tokens removed before encoding (e.g. names that give the label away).
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | None = None,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        vocab_size: int = HASHED_VOCAB_SIZE,
        drop: Iterable[str] = (),
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise DataError(f"max_length must be an int >= 1, got {max_length!r}.")
        if vocabulary is None and (
            isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2
        ):
            raise DataError(f"vocab_size must be an int >= 2, got {vocab_size!r}.")
        if isinstance(vocabulary, str):
            raise DataError("vocabulary is a list of words, not one string.")
        self.vocabulary = None if vocabulary is None else [str(w) for w in vocabulary]
        if self.vocabulary is not None and len(set(self.vocabulary)) != len(self.vocabulary):
            raise DataError("the vocabulary lists a word twice; each word needs one id.")
        self.max_length = max_length
        self.drop = tuple(sorted({str(w) for w in drop}))
        self._ids = (
            None
            if self.vocabulary is None
            else {w: i + 2 for i, w in enumerate(self.vocabulary)}
        )
        self._vocab_size = vocab_size if self.vocabulary is None else len(self.vocabulary) + 2

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        corpus: Iterable[str],
        *,
        max_vocab: int = 20_000,
        min_count: int = 1,
        max_length: int = DEFAULT_MAX_LENGTH,
        drop: Iterable[str] = (),
    ) -> Tokenizer:
        """A vocabulary tokenizer: the ``max_vocab`` most frequent words of ``corpus`` seen at
        least ``min_count`` times (ties broken alphabetically, so a corpus gives one vocabulary)."""
        if isinstance(corpus, str):
            raise DataError("Tokenizer.fit takes a list of texts, not one string; wrap it: [text].")
        if max_vocab < 1 or min_count < 1:
            raise DataError("Tokenizer.fit needs max_vocab >= 1 and min_count >= 1.")
        dropped = {str(w) for w in drop}
        counts = Counter(w for text in corpus for w in words(text) if w not in dropped)
        if not counts:
            raise DataError("Tokenizer.fit found no words in the corpus: is it empty?")
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_vocab], max_length=max_length, drop=dropped)

    # -- facts -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"hashed"`` or ``"vocabulary"``."""
        return "hashed" if self.vocabulary is None else "vocabulary"

    @property
    def vocab_size(self) -> int:
        """The id range (an embedding's number of rows): padding and unknown ids included."""
        return self._vocab_size

    @property
    def padding_id(self) -> int:
        return PADDING_ID

    def same_ids(self, other: Tokenizer) -> bool:
        """Whether ``other`` gives every word the id this one gives it (lengths and dropped
        words may differ: an encoder trained with one reads the other's ids as it learned)."""
        if self.kind != other.kind:
            return False
        if self.vocabulary is None:
            return self.vocab_size == other.vocab_size
        return self.vocabulary == other.vocabulary

    # -- encoding ----------------------------------------------------------------------------
    def ids(self, text: str) -> list[int]:
        """One text's ids, unpadded and untruncated."""
        kept = [w for w in words(text) if w not in self.drop]
        if self._ids is None:
            return [hashed_id(w, self._vocab_size) for w in kept]
        return [self._ids.get(w, UNKNOWN_ID) for w in kept]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> int64 ids ``(N, max_length)``, right-padded with 0 and truncated."""
        texts = _texts(texts, "encode")
        out = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = self.ids(text)[: self.max_length]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)

    def domain(
        self,
        texts: Sequence[str],
        labels: Sequence[Any] | None = None,
        *,
        classes: Sequence[str] | None = None,
        name: str = "texts",
    ) -> Domain:
        """A Domain of these texts' ids for ``tlkit.fit`` / ``run.predict``, carrying this
        tokenizer. ``labels`` are class names or indices, as in
        :func:`~tlkit.datasets.from_tensors`; ``None`` leaves the texts unlabelled."""
        texts = _texts(texts, "domain")
        ids = self.encode(texts)
        info = {
            "vocab_size": self.vocab_size,
            "padding_id": PADDING_ID,
            "max_length": self.max_length,
            "tokenizer": self.to_dict(),
        }
        if labels is None:  # texts to predict: no label set needed
            return Domain(labels=None, classes=tuple(classes or ()), name=name, inputs=ids,
                          info=info)  # fmt: skip
        if len(labels) != len(texts):
            raise DataError(f"{len(texts)} texts but {len(labels)} labels; give one label per text.")
        return from_tensors(ids, labels, classes=classes, name=name, info=info)

    # -- saving ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON, and checkpoints loaded with ``weights_only=True``)."""
        return {
            "kind": self.kind,
            "vocabulary": self.vocabulary,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "drop": list(self.drop),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Tokenizer:
        """The tokenizer :meth:`to_dict` described; a damaged description is named."""
        if not isinstance(state, Mapping) or state.get("kind") not in _KINDS:
            raise DataError(f"not a tokenizer description: {str(state)[:120]!r}.")
        try:
            return cls(
                state["vocabulary"] if state["kind"] == "vocabulary" else None,
                max_length=int(state["max_length"]),
                vocab_size=int(state["vocab_size"]),
                drop=state.get("drop") or (),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the tokenizer description is damaged ({exc!r}).") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer as JSON (the run keeps its own copy; this is for other tools)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"could not read a tokenizer from '{path}': {exc}.") from None
        return cls.from_dict(state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, vocab_size={self.vocab_size}, max_length={self.max_length})"


def _texts(texts: Any, who: str) -> list[str]:
    if isinstance(texts, str):
        raise DataError(f"{who} takes a list of texts, not one string; wrap it: [text].")
    return [str(t) for t in texts]


def tokenizer_of(domain: Domain) -> Tokenizer | None:
    """The tokenizer a domain's ids came from, when it says (``info["tokenizer"]``)."""
    state = domain.info.get("tokenizer") if isinstance(domain.info, Mapping) else None
    return Tokenizer.from_dict(state) if state is not None else None


__all__ = ["HASHED_VOCAB_SIZE", "Tokenizer", "hashed_id", "tokenizer_of", "words"]
