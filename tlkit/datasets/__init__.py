"""Data for tlkit: the bundled offline datasets, user data, weak labels and augmentation.

Everything the engine trains on is a :class:`Domain` (uint8 images in memory, training labels
with ``-1`` for unlabelled, and the clean labels kept for evaluation) or a :class:`DomainPair`
(labelled source, optional unlabelled target, test sets). Typical use::

    from tlkit import datasets

    task = datasets.load("synth-digits->digits")          # domain adaptation, offline
    task = datasets.few_labels(datasets.load("digits"), k=5)  # semi-supervised
    task = datasets.add_label_noise(datasets.load("digits"), "symmetric", rate=0.4)
    mine = datasets.from_folder("photos/", image_size=96)    # your own ImageFolder

Bundled data is generated from files that installed packages ship (scikit-learn, matplotlib's
fonts, scikit-image's sample photos) and cached under ``$TLKIT_CACHE`` or ``~/.cache/tlkit``;
nothing is ever downloaded.
"""

from .augment import strong_augment, weak_augment
from .bundled import load, names
from .domain import UNLABELLED, DataError, Domain, DomainPair
from .noise import add_label_noise, transition_matrix
from .sources import from_arrays, from_folder, from_torchvision
from .splits import few_labels

__all__ = [
    "UNLABELLED",
    "DataError",
    "Domain",
    "DomainPair",
    "add_label_noise",
    "few_labels",
    "from_arrays",
    "from_folder",
    "from_torchvision",
    "load",
    "names",
    "strong_augment",
    "transition_matrix",
    "weak_augment",
]
