"""The step types live in :mod:`tlkit.step` (below the engine, beside the contract); this name
keeps older imports working."""

from tlkit.step import (  # noqa: F401
    PseudoLabels,
    Step,
    TrainState,
    domain_context,
    forward_domain,
)

__all__ = ["PseudoLabels", "Step", "TrainState", "domain_context", "forward_domain"]
