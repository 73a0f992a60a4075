"""Pretrained weights that need a download: one quick, honest attempt, never a retry loop.

Most of tlkit runs without a network: EfficientNet-Lite0's ImageNet weights ship with an
installed package, ``small_cnn`` and the tabular/text backbones start from a random init, and
``weights=<file>`` loads a local checkpoint (:mod:`tlkit.backbones.availability` lists which name
needs what). torchvision's and timm's pretrained weights are downloaded on first use, then read
from their cache. A download is attempted once -- never retried -- and not at all when the
environment says offline (``TLKIT_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) or the weights' host does
not answer within :data:`PROBE_TIMEOUT` seconds; the :class:`BackboneError` then names the file to
fetch and where to put it.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

from tlkit.backbones import BackboneError

T = TypeVar("T")
#: Environment variables that, set to a true value, mean "do not touch the network".
OFFLINE_ENV = ("TLKIT_OFFLINE", "HF_HUB_OFFLINE")
#: Seconds the weights' host has to accept a connection before tlkit calls the machine offline.
PROBE_TIMEOUT = 2.0
_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_FALLBACK = "'efficientnet_lite0' has ImageNet weights offline (bundled)"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``host`` accepts a TCP connection within ``timeout`` s (asked once per process)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_reason(host: str | None) -> str | None:
    """Why a download from ``host`` would fail at once, or ``None`` when it is worth one try."""
    for var in OFFLINE_ENV:
        if _true(os.environ.get(var)):
            return f"{var} is set, so tlkit does not try the network"
    if host and not any(os.environ.get(v) for v in _PROXY_ENV) and not reachable(host):
        return f"{host} did not answer within {PROBE_TIMEOUT:g} s (offline?)"
    return None


def download_once(
    what: str, url: str, destination: str, download: Callable[[], T], *, host: str | None = None
) -> T:
    """``download()`` tried once, and only when the network looks usable; a failure says which
    file to fetch and where to put it."""
    host = host or urlparse(url).hostname
    how = (
        f"Download {url} where you have network and put it at {destination!r}, or pass "
        f"pretrained=False to train from a random init; {OFFLINE_FALLBACK}."
    )
    reason = offline_reason(host)
    if reason is not None:
        raise BackboneError(
            f"{what} are not available offline: they need a download ({url}) and {reason}. {how}"
        )
    try:
        return download()
    except Exception as exc:  # URLError, OSError, HTTP and hash errors...
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise BackboneError(
            f"{what} are not available offline: they need a download ({url}), which failed "
            f"({type(exc).__name__}: {first}). {how}"
        ) from exc


# -- timm's cache ------------------------------------------------------------------------------
def timm_source(name: str) -> tuple[str, str, str]:
    """``(url, host, cache location)`` of a timm model's default pretrained weights."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import constants

        cache = str(constants.HF_HUB_CACHE)
        return f"https://huggingface.co/{hub_id.split('@')[0]}", "huggingface.co", cache
    url = getattr(cfg, "url", None) or ""
    return url, urlparse(url).hostname or "", _hub_checkpoint(url) if url else ""


def _hub_checkpoint(url: str) -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def timm_cached_file(name: str) -> str | None:
    """A local file holding timm model ``name``'s default pretrained weights, if cached."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
        for filename in filter(None, names):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = getattr(cfg, "url", None)
    if url and os.path.isfile(_hub_checkpoint(url)):
        return _hub_checkpoint(url)
    return None
