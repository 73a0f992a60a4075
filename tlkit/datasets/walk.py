"""Listing a folder tree of images: each real directory once, each real file once.

Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``, ``.git``...) are skipped;
symbolic links are followed, but every directory is entered once by its real path (a link loop
ends instead of repeating images), and a file reached twice is kept once, under the class folder
it really lives in (links are followed only after every real file is listed).
"""

from __future__ import annotations

import os
import warnings

from .errors import DataWarning


class Walker:
    """Lists image files, each real directory once and each real file once.

    Two passes, so that links never take an image away from the folder it really lives in:
    ``scan`` lists the real (non-link) files and folders of every class first and sets the
    links aside; ``follow_links`` then adds the linked files and folders whose real path was not
    listed yet (a link loop or an alias of another class adds nothing).
    """

    def __init__(self, extensions: tuple[str, ...]) -> None:
        self.extensions = tuple(e.lower() for e in extensions)
        self.seen_dirs: set[str] = set()
        self.seen_files: set[str] = set()
        self.links: list[tuple[int, str]] = []
        self.loops: list[str] = []
        self.duplicates: list[str] = []
        self.unreadable: list[str] = []

    def scan(self, top: str, owner: int = 0, follow: bool = False) -> list[str]:
        """Image paths under ``top`` (not sorted); links are set aside unless ``follow``."""
        out: list[str] = []
        stack = [top]
        while stack:
            d = stack.pop()
            real = os.path.realpath(d)
            if real in self.seen_dirs:
                self.loops.append(d)
                continue
            self.seen_dirs.add(real)
            try:
                entries = list(os.scandir(d))
            except OSError as e:
                self.unreadable.append(f"{d} ({e.strerror or e})")
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_symlink() and not follow:
                        self.links.append((owner, e.path))
                        continue
                    if e.is_dir():
                        stack.append(e.path)
                        continue
                    if not (e.name.lower().endswith(self.extensions) and e.is_file()):
                        continue
                except OSError:  # a dangling link
                    continue
                real_file = (
                    os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
                )
                if real_file in self.seen_files:
                    self.duplicates.append(e.path)
                    continue
                self.seen_files.add(real_file)
                out.append(e.path)
        return out

    def follow_links(self) -> list[tuple[int, str]]:
        """``(owner, path)`` of the images reachable only through the links set aside."""
        found: list[tuple[int, str]] = []
        while self.links:
            owner, path = self.links.pop(0)
            try:
                is_dir = os.path.isdir(path)
                ok = is_dir or (path.lower().endswith(self.extensions) and os.path.isfile(path))
            except OSError:
                continue
            if not ok:
                continue
            if is_dir:
                found += [(owner, p) for p in self.scan(path, owner, follow=True)]
                continue
            real_file = os.path.realpath(path)
            if real_file in self.seen_files:
                self.duplicates.append(path)
                continue
            self.seen_files.add(real_file)
            found.append((owner, path))
        return found

    def warn(self, root: str) -> None:
        if self.loops:
            warnings.warn(
                f"from_folder('{root}'): {len(self.loops)} folder(s) were reached again through "
                f"symbolic links (e.g. '{self.loops[0]}'); each real folder is listed once.",
                DataWarning,
                stacklevel=3,
            )
        if self.duplicates:
            warnings.warn(
                f"from_folder('{root}'): {len(self.duplicates)} file(s) are links to images "
                f"already listed (e.g. '{self.duplicates[0]}'); each is kept once, under the class "
                "folder it really lives in.",
                DataWarning,
                stacklevel=3,
            )
        if self.unreadable:
            warnings.warn(
                f"from_folder('{root}'): cannot open {len(self.unreadable)} folder(s): "
                f"{self.unreadable[:3]}; their images are left out. Fix the permissions.",
                DataWarning,
                stacklevel=3,
            )


def relative(paths: list[str], top: str) -> list[str]:
    """Paths under ``top`` made relative by slicing (``os.path.relpath`` is ~20x slower)."""
    prefix = top.rstrip(os.sep) + os.sep
    n = len(prefix)
    return [p[n:] if p.startswith(prefix) else os.path.relpath(p, top) for p in paths]
