"""Helpers for tests, benchmarks and examples: realistic data built from what the installed
packages ship, so nothing is downloaded and no private files are needed."""

from .photos import PhotoFolder, make_photo_folder

__all__ = ["PhotoFolder", "make_photo_folder"]
