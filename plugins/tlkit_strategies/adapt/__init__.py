"""Domain adaptation: the ``adapt=`` family."""
