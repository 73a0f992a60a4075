"""tlkit's first-party strategies.

Each strategy is one module, loaded through the ``tlkit`` entry-point group exactly as a
third-party plugin would be (see ``[project.entry-points.tlkit]`` in pyproject.toml).
"""
