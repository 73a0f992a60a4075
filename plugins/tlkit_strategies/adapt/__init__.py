"""Domain adaptation: the ``adapt=`` family.

``source_to_target_grid(transform, source, target=None, *, n=8, seed=0, title=None)`` draws
source images next to their target-style versions (PixelDA's generator, FDA's swap); it is
re-exported here for the book and the dashboard (matplotlib is imported when it is called).
"""

from tlkit_strategies.adapt._pixel_plots import source_to_target_grid

__all__ = ["source_to_target_grid"]
