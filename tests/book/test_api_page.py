"""The API reference lists everything a user can import from ``tlkit`` and ``tlkit.datasets``:
a public name left off the page is a feature people cannot find."""

from __future__ import annotations

import re
import types
from pathlib import Path

import tlkit
import tlkit.datasets

PAGE = Path(__file__).resolve().parents[2] / "book" / "api.md"
#: Public names that are not API to look up (modules are listed member by member).
NOT_ENTRIES = {"__version__"}


def documented() -> set[str]:
    """The dotted names the page's autodoc directives point at."""
    text = PAGE.read_text()
    names = set(re.findall(r"^\.\. auto\w+:: ([\w.]+)", text, re.MULTILINE))
    for block in re.finditer(r"^\.\. auto\w+:: ([\w.]+)\n((?:   .*\n)+)", text, re.MULTILINE):
        members = re.search(r":members: (.*)", block.group(2))
        if members:
            names |= {f"{block.group(1)}.{m.strip()}" for m in members.group(1).split(",")}
    return names


def on_page(module: types.ModuleType, name: str, listed: set[str]) -> bool:
    """Listed under the name users import it by, or where it is defined."""
    obj = getattr(module, name)
    home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    return f"{module.__name__}.{name}" in listed or home in listed


def test_every_public_name_of_tlkit_is_on_the_api_page():
    listed = documented()
    missing = [
        name
        for name in tlkit.__all__
        if name not in NOT_ENTRIES
        and not isinstance(getattr(tlkit, name), types.ModuleType)
        and not on_page(tlkit, name, listed)
    ]
    assert not missing, f"add these to book/api.md: {missing}"


def test_every_public_function_and_class_of_datasets_is_on_the_api_page():
    listed = documented()
    missing = [
        name
        for name in tlkit.datasets.__all__
        if callable(getattr(tlkit.datasets, name)) and not on_page(tlkit.datasets, name, listed)
    ]
    assert not missing, f"add these to book/api.md: {missing}"
