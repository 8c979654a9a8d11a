"""Small JSON documents over HTTP (an API answer, a model_index.json), read with a bound: a
server that sends more than the limit is refused, never held whole in memory."""

from __future__ import annotations

import json
from typing import Any

import requests

LIMIT = 4 * 1024 * 1024


class TooLarge(ValueError):
    pass


def get_json(url: str, headers: dict[str, str], limit: int = LIMIT) -> tuple[int, Any]:
    """(status, parsed body or None); raises requests' errors, TooLarge past `limit`."""
    with requests.get(url, headers=headers, stream=True, timeout=30) as response:
        body = b""
        for block in response.iter_content(64 * 1024):
            body += block
            if len(body) > limit:
                raise TooLarge(f"{url} sent more than {limit // 1024} KiB")
        try:
            return response.status_code, json.loads(body)
        except ValueError:
            return response.status_code, None
