"""Pseudo-labelling and semi-supervised learning: the ``pseudo_label=`` family."""
