"""Domain adaptation: the ``adapt=`` family. Strategies that transform source images (FDA,
PixelDA) show what they do through ``preview()``, which :func:`tlkit.plots.source_to_target_grid`
calls."""
