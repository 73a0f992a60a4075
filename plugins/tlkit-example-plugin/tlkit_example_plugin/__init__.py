"""An example third-party tlkit plugin: the focal loss, usable as ``tlkit.fit(..., loss="focal")``.

tlkit finds it through the ``tlkit`` entry-point group declared in this package's
``pyproject.toml``; nothing here is imported by tlkit until a run asks for ``focal``.
"""

from tlkit_example_plugin.focal import FocalLoss

__all__ = ["FocalLoss"]
