"""nbval re-runs the book's notebooks (``pytest notebooks/ --nbval-lax ...``, see README.md).

Each notebook's kernel gets one CPU thread: the stored outputs were computed that way, and two
threads gain nothing for these small models on a shared 2-core CI machine.

The training-heavy chapters 6 and 6b re-run as if on another machine: two threads, and PyTorch
and oneDNN limited to AVX2 kernels (on an AVX-512 CPU this changes the order of floating-point
reductions, as a student's laptop would). Their asserts must hold there too: per-seed numbers
differ across CPUs and thread counts, so chapters assert ranges grounded in the spread measured
over seeds.

``TLKIT_NOTEBOOK_THREADS=4 pytest notebooks/ ...`` runs every kernel with that many threads
instead (chapters 6 and 6b keep their AVX2 kernels): how a chapter's claims are checked at
another thread count.
"""

import os

import pytest

THREADS = os.environ.get("TLKIT_NOTEBOOK_THREADS")
os.environ["OMP_NUM_THREADS"] = THREADS or "1"

#: Chapters executed as on another machine, and the environment that emulates it.
OTHER_MACHINE = {"06_domain_adaptation.ipynb", "06b_pixel_level_and_validators.ipynb"}
OTHER_ENV = {
    "OMP_NUM_THREADS": THREADS or "2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
_DEFAULT_ENV = {key: os.environ.get(key) for key in OTHER_ENV}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Set the kernel's environment before nbval starts the notebook's kernel (on its first
    cell), so that the kernel process inherits it."""
    env = OTHER_ENV if item.path.name in OTHER_MACHINE else _DEFAULT_ENV
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
