"""The API queue's requests on disk, so they outlive `sdtui serve` (a crash, SIGKILL, Ctrl-C).

One file per deployment, state_dir()/serve/NAME.json, replaced atomically on every change. Each
request is written with the worker request id it will be sent under, and stays in the file
until it is over. After a restart a request the worker already knows is not sent again: the one
still running is adopted through the worker's spool, and one whose images are in the outputs'
index is done. So each image is saved once, whenever the process died.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdtui.errors import BadInput
from sdtui.ledger import write_json_atomic
from sdtui.paths import state_dir

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Pending:
    rid: str  # the worker request id it is (or will be) sent under
    route: str
    params: dict[str, Any]


def path_for(deployment: str) -> Path:
    return state_dir() / "serve" / f"{deployment}.json"


def damaged(path: Path, why: str) -> BadInput:
    return BadInput(f"the API queue file {path} is damaged ({why})",
                    fix="delete it (the requests it held are not run) or restore it, then run "
                    "sdtui serve again")


def load(deployment: str) -> list[Pending]:
    """The requests a previous `sdtui serve` left, oldest first; BadInput for a damaged file."""
    path = path_for(deployment)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BadInput(f"cannot read the API queue file {path}: {exc.strerror}",
                       fix="fix the permissions of that file") from None
    except UnicodeDecodeError:
        raise damaged(path, "it is not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise damaged(path, "it is not valid JSON: truncated?") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION \
            or not isinstance(data.get("requests"), list):
        raise damaged(path, "it is not an API queue: no schema or no requests")
    found = []
    for item in data["requests"]:
        if not (isinstance(item, dict) and isinstance(item.get("rid"), str)
                and isinstance(item.get("route"), str) and isinstance(item.get("params"), dict)):
            raise damaged(path, "a request is missing its rid, route or params")
        found.append(Pending(item["rid"], item["route"], item["params"]))
    return found


def save(deployment: str, requests: list[Pending]) -> None:
    """Replace the file with `requests` (atomically); an empty queue removes it."""
    path = path_for(deployment)
    if not requests:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"schema": SCHEMA_VERSION, "requests": [
        {"rid": p.rid, "route": p.route, "params": p.params} for p in requests]})
