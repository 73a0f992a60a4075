"""Domain and DomainPair: the two data shapes the engine trains on.

A :class:`Domain` is a set of samples from one distribution. The samples live in a *backing*
(:mod:`tlkit.datasets.backing`):

* in memory -- a ``uint8`` image tensor ``(N, C, H, W)`` (bundled digits, ``from_arrays``) or any
  per-sample tensor ``(N, ...)`` (``from_tensors``: float feature vectors, int64 token ids). The
  engine indexes these directly: the fast path, no workers.
* files -- image files decoded lazily at their native resolution by ``d.dataset(...)`` inside
  ``DataLoader`` workers (``from_folder``, ``from_csv``, ``from_paths``, ``from_shards``, lazy
  torchvision datasets). Listing a folder decodes nothing, so memory stays flat in N.

Labels live beside the backing, in memory, in two forms, whatever the backing:

* ``labels`` -- what training may see. ``-1`` marks an unlabelled sample (classification).
* ``clean_labels`` -- the truth, kept for evaluation even after noise injection or when labels are
  hidden, so that "accuracy on clean labels" and "pseudo-label accuracy" can be measured. ``-1``
  where the truth is unknown (data that never had labels).

So ``subset``, ``split``, ``few_labels``, ``add_label_noise`` and :class:`DomainPair` never read an
image. A :class:`DomainPair` is one transfer task: a labelled ``source`` to learn from, an optional
unlabelled ``target`` to adapt to (or the unlabelled pool of a semi-supervised task), and held-out
test sets for both. Single-domain tasks are pairs without a target.
"""

from .errors import (  # noqa: F401 (re-exported: the historical home of these names)
    MAX_IMAGE_SIZE,
    MODALITIES,
    UNLABELLED,
    DataError,
    DataWarning,
    check_image_size,
)
from .pair import DomainPair
from .samples import Domain

__all__ = ["UNLABELLED", "DataError", "DataWarning", "Domain", "DomainPair", "check_image_size"]
