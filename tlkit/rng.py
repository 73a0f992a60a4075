"""Seeds and the one lock around the process-wide random generators.

**Seeds.** Every random draw of a run is a pure function of the run's ``seed`` and where it
happens, so that a run resumed after any step replays exactly what the uninterrupted run would
have done. The formulas live here, one function per use:

* :func:`step_seed` -- a training step (dropout, a strategy's ``torch.rand``, ``step.generator``),
  with the two set-up draws before the first step (:data:`STRATEGY_SETUP`, :data:`STRATEGY_INIT`);
* :func:`source_order_seed`, :func:`target_order_seed`, :func:`target_shard_seed`,
  :func:`balanced_order_seed` -- the data order of an epoch;
* :func:`augment_seed` -- per-sample augmentations of an epoch.

**The lock.** PyTorch's global generator is shared by every thread of a process. tlkit never
relies on its state: a training step seeds it from ``(seed, step)`` and a per-sample augmentation
from ``(sample, seed)``, each while holding :data:`GLOBAL_RNG_LOCK`, so that two seeded runs in
two threads (the dashboard's background run and a notebook cell's) draw exactly what they would
alone. Code outside tlkit that draws from the global generator while a run trains is not
covered: draw from a ``torch.Generator`` of your own there.
"""

from __future__ import annotations

import threading

#: Held while tlkit seeds and draws from the process-wide generators (re-entrant).
GLOBAL_RNG_LOCK = threading.RLock()

#: The "step" whose seed initialises the strategies' modules (``tlkit_setup``).
STRATEGY_SETUP = -1
#: The "step" whose seed the strategies' constructors draw from.
STRATEGY_INIT = -2


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of training step ``step`` on process ``rank`` (ranks draw different dropout
    masks and augmentations, as different data does)."""
    return (seed * 1_000_003 + step + rank * 7_777_777_777) % (2**63)


def source_order_seed(seed: int, epoch: int) -> int:
    """The shuffle of the labelled source in ``epoch`` (0-based)."""
    return seed * 7919 + epoch


def target_order_seed(seed: int, epoch: int) -> int:
    """The shuffle of an in-memory target in ``epoch`` (0-based)."""
    return seed * 104729 + epoch + 1


def target_shard_seed(seed: int) -> int:
    """The base seed of a file-backed target's own epoch orders."""
    return seed + 104729


def balanced_order_seed(seed: int, epoch: int) -> int:
    """The class-balanced draw (``sampler="balanced"``) of ``epoch``."""
    return seed * 6151 + epoch * 31 + 17


def augment_seed(seed: int, epoch: int, role: int) -> int:
    """The seed of every per-sample augmentation in ``epoch`` (role 0: source, 1: target)."""
    return (seed * 1_000_033 + epoch * 2 + role) % (2**62)


__all__ = [
    "GLOBAL_RNG_LOCK",
    "STRATEGY_INIT",
    "STRATEGY_SETUP",
    "augment_seed",
    "balanced_order_seed",
    "source_order_seed",
    "step_seed",
    "target_order_seed",
    "target_shard_seed",
]
