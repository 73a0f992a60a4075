"""Data for tlkit: the bundled offline datasets, user data, weak labels and augmentation.

Everything the engine trains on is a :class:`Domain` (samples in a *backing* -- ``uint8`` images
or other tensors in memory, or image files decoded lazily -- with training labels, ``-1`` for
unlabelled, and the clean labels kept for evaluation) or a :class:`DomainPair` (labelled
source, optional unlabelled target, test sets). Typical use::

    from tlkit import datasets

    task = datasets.load("synth-digits->digits")          # domain adaptation, offline
    task = datasets.few_labels(datasets.load("digits"), k=5)  # semi-supervised
    task = datasets.add_label_noise(datasets.load("digits"), "symmetric", rate=0.4)
    mine = datasets.from_folder("photos/")                 # your own ImageFolder, lazy
    pool = datasets.from_folder("field/", labels=False)    # unlabelled images
    wine = datasets.load("wine")                           # tabular; "docstrings" is text

Bundled data is generated from files that installed packages ship (scikit-learn, matplotlib's
fonts, scikit-image's sample photos, the docstrings of installed libraries) and cached under
``$TLKIT_CACHE`` or ``~/.cache/tlkit``; nothing is ever downloaded.

For the engine: ``d.dataset(transform)`` (map-style, keys ``i`` or ``(i, seed)``) and
``d.stream(...)`` (one rank's epoch) feed a ``DataLoader`` with :func:`collate`;
:mod:`tlkit.datasets.transforms` has the per-sample pipelines.
"""

from . import transforms
from .augment import colour_augment, strong_augment, weak_augment
from .bundled import load, names
from .csv_manifest import from_csv
from .decode import DecodeError
from .domain import UNLABELLED, DataError, DataWarning, Domain
from .files import from_folder, from_paths
from .loader import DomainDataset, KeySampler, StreamDataset, collate
from .noise import add_label_noise, transition_matrix
from .pair import DomainPair
from .shards import from_shards, pack
from .sources import from_arrays, from_tensors, from_torchvision
from .splits import few_labels

__all__ = [
    "colour_augment",
    "UNLABELLED",
    "DataError",
    "DataWarning",
    "DecodeError",
    "Domain",
    "DomainDataset",
    "DomainPair",
    "KeySampler",
    "StreamDataset",
    "add_label_noise",
    "collate",
    "few_labels",
    "from_arrays",
    "from_csv",
    "from_folder",
    "from_paths",
    "from_shards",
    "from_tensors",
    "from_torchvision",
    "load",
    "names",
    "pack",
    "strong_augment",
    "transforms",
    "transition_matrix",
    "weak_augment",
]
