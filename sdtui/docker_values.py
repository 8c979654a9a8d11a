"""Docker names and engine URLs as sdtui takes them: one check each, shared by the config file
and the flags and forms (which reach them through the settings dataclasses). Each returns the
value or raises ValueError saying what is wrong with it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IMAGE = re.compile(r"[^\s]+")
ENGINE_SCHEMES = ("unix", "tcp", "ssh", "http", "https", "npipe")


def volume_name(text: str) -> str:
    if not _VOLUME.fullmatch(text):
        raise ValueError(f"not a valid Docker volume name: {text!r} (letters, digits, '_', '.' "
                         "and '-', starting with a letter or digit)")
    return text


def image_name(text: str) -> str:
    if not _IMAGE.fullmatch(text):
        raise ValueError(f"not a valid image name: {text!r} (no spaces)")
    return text


def engine_url(text: str) -> str:
    """A Docker engine URL as DOCKER_HOST takes it: unix://, tcp://, ssh://, ..."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (parsing it is the check: a bad port raises ValueError)
    except ValueError as exc:
        raise ValueError(f"not a valid Docker engine URL: {text!r} ({exc})") from None
    if parts.scheme not in ENGINE_SCHEMES:
        raise ValueError(f"not a valid Docker engine URL: {text!r} (it starts with one of "
                         f"{', '.join(s + '://' for s in ENGINE_SCHEMES)})")
    if parts.scheme == "unix" and not parts.path or parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"not a valid Docker engine URL: {text!r} (no "
                         f"{'socket path' if parts.scheme == 'unix' else 'host'})")
    return text
