"""One lock around the process-wide random generators (PyTorch's, Python's, NumPy's).

PyTorch's global generator is shared by every thread of a process. tlkit never relies on its
state: a training step seeds it from ``(seed, step)`` and a per-sample augmentation from
``(sample, seed)``, each while holding :data:`GLOBAL_RNG_LOCK`, so that two seeded runs in two
threads (the dashboard's background run and a notebook cell's) draw exactly what they would alone.
Code outside tlkit that draws from the global generator while a run trains is not covered: draw
from a ``torch.Generator`` of your own there.
"""

from __future__ import annotations

import threading

#: Held while tlkit seeds and draws from the process-wide generators (re-entrant).
GLOBAL_RNG_LOCK = threading.RLock()

__all__ = ["GLOBAL_RNG_LOCK"]
