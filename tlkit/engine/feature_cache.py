"""The frozen phase's feature cache: the backbone's features of each set, computed once.

While the backbone is frozen (``mode="feature_extraction"``, the first epochs of
``"fine_tune"``), a step would run the same images through the same backbone every epoch. The
trainer owns one :class:`FeatureCache` per ``train()``, fills it from the sets the
:class:`~tlkit.engine.feeding.Feeder` names (:meth:`Feeder.feature_sets`) and hands it to the
feeder's ``batches`` / ``eval_batches``, which read rows from it. The cache computes features
from the model itself (:func:`tlkit.engine.feature_store.features`: in memory, or a float16 file
for sets beyond ``feature_ram_budget``); it never calls back into the trainer or the feeder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tlkit.engine import feature_store


class FeatureCache:
    """Frozen-backbone features by set key (``"source"``, ``"target"``, ``"eval_<name>"``):
    ``rows`` and ``row_of`` (sample position -> row, ``-1`` for a file that could not be read)."""

    def __init__(self, model: nn.Module, image_size: int, config: Any, precision: str) -> None:
        self.model, self.image_size = model, image_size
        self.config, self.precision = config, precision
        self._sets: dict[str, tuple[Any, torch.Tensor]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._sets

    def rows(self, key: str) -> tuple[Any, torch.Tensor]:
        """``(rows, row_of)`` of one set: ``rows[row_of[i]]`` is sample ``i``'s features."""
        return self._sets[key]

    @torch.no_grad()
    def fill(self, feeds: Mapping[str, Any]) -> None:
        """Run the frozen backbone once over each of ``feeds`` (set key -> ``DomainFeed``) not
        cached yet; later epochs only train the head."""
        for key, feed in feeds.items():
            if key in self._sets:
                continue
            batches = feed.eval_batches(self.config.eval_batch_size)
            rows, idx = feature_store.features(
                self.model, batches, feed.domain, key, self.image_size, self.config, self.precision
            )
            row_of = torch.full((len(feed.domain),), -1, dtype=torch.long)
            row_of[idx] = torch.arange(len(idx))
            self._sets[key] = (rows, row_of)
