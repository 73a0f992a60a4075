"""Regularised fine-tuning: the ``regularize=`` family."""
