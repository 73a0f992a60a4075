"""Unsupervised model selection on the target: the ``validate=`` family."""
