"""Supervised losses: the ``loss=`` family."""
