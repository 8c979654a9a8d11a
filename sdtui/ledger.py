"""The ledger: what each deployment created, so status, resume and teardown work after a crash.

One JSON file per deployment under state_dir()/deployments/. Every change is a
read-modify-write under an exclusive lock (so two processes never lose each other's records)
that replaces the file atomically (temp file, fsync, rename: a crash leaves the old file whole).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sdtui.errors import BadInput, DeploymentError
from sdtui.paths import state_dir

SCHEMA_VERSION = 1
OPTIONS = ("local", "aws", "batch")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_LOCK_NAME = ".lock"


class LedgerWriteError(DeploymentError):
    """The state file could not be written; the previous one is intact."""


@dataclass
class LedgerEntry:
    kind: str
    id: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def deployments_dir() -> Path:
    return state_dir() / "deployments"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BadInput(
            f"invalid deployment name {name!r}",
            fix="use 1 to 40 lowercase letters, digits and hyphens, not starting with a hyphen",
        )
    return name


def _validate_option(option: str) -> str:
    if option not in OPTIONS:
        raise BadInput(f"unknown deployment option {option!r}", fix="use 'local', 'aws' or 'batch'")
    return option


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One lock for the whole state (the ledgers and recent.json): changes are rare and short,
    and a single lock file that is never deleted cannot be split by a concurrent delete."""
    directory = deployments_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _write_error(directory, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_error(path: Path, exc: OSError) -> LedgerWriteError:
    return LedgerWriteError(
        f"could not write the deployment ledger {path}: {exc.strerror or exc}",
        fix="free some disk space or fix the permissions of that directory, then run again",
    )


def damaged(path: Path, why: str) -> BadInput:
    """A ledger file that cannot be trusted: one line naming it and what to do."""
    return BadInput(
        f"the deployment ledger {path} is damaged ({why})",
        fix="restore it from a backup, or check the deployment's resources by hand "
        "and delete the file",
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(
            f"cannot read the deployment ledger {path}: {exc.strerror}",
            fix="fix the permissions of that file",
        ) from None
    except UnicodeDecodeError:
        raise damaged(path, "it is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise damaged(path, "it is not valid JSON: truncated?") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise damaged(path, "it is not a ledger: no schema")
    schema = data["schema"]
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise BadInput(
            f"the deployment ledger {path} was written by a newer sdtui (schema {schema})",
            fix="upgrade sdtui (pip install -U sdtui)",
        )
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(os.dup(fd), "wb") as stream:
                stream.write(text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class Ledger:
    """The recorded state of one deployment. Every mutating call persists before returning."""

    def __init__(
        self,
        name: str,
        option: str,
        params: dict[str, Any] | None = None,
        resources: list[LedgerEntry] | None = None,
        created_at: str | None = None,
        updated_at: str | None = None,
    ) -> None:
        self.name = validate_name(name)
        self.option = _validate_option(option)
        self.params: dict[str, Any] = params or {}
        self._resources: list[LedgerEntry] = resources or []
        self.created_at = created_at or _now()
        self.updated_at = updated_at or self.created_at

    @property
    def path(self) -> Path:
        return deployments_dir() / f"{self.name}.json"

    def __repr__(self) -> str:
        return f"Ledger({self.name!r}, {self.option!r}, {len(self._resources)} resources)"

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def _from_dict(cls, data: dict[str, Any], path: Path) -> Ledger:
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise damaged(path, f"params is a {type(params).__name__}, not an object")
        try:
            resources = [LedgerEntry(**entry) for entry in data.get("resources") or []]
            if not all(isinstance(e.kind, str) and isinstance(e.id, str)
                       and isinstance(e.meta, dict) for e in resources):
                raise TypeError
            return cls(
                name=data["name"],
                option=data["option"],
                params=dict(params),
                resources=resources,
                created_at=data.get("created_at"),
                updated_at=data.get("updated_at"),
            )
        except (KeyError, TypeError, BadInput):
            raise damaged(path, "a name, an option or a resource is missing or wrong") from None

    @classmethod
    def load(cls, name: str) -> Ledger | None:
        path = deployments_dir() / f"{validate_name(name)}.json"
        data = _read(path)
        return None if data is None else cls._from_dict(data, path)

    @classmethod
    def open(cls, name: str, option: str) -> Ledger:
        """The recorded deployment, or a new one in memory (its file appears on first write)."""
        existing = cls.load(name)
        if existing is None:
            return cls(name, option)
        if existing.option != _validate_option(option):
            raise BadInput(
                f"deployment {name!r} already exists as a {existing.option} deployment",
                fix="choose another deployment name, or tear that one down first",
            )
        return existing

    # --- persisting ------------------------------------------------------------------------

    def _to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "option": self.option,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "params": self.params,
            "resources": [asdict(entry) for entry in self._resources],
        }

    def _change(self, apply: Callable[[Ledger], None]) -> None:
        """Re-read the file under the lock (another process may have written it), apply the
        change to that fresh copy, write it, and only then adopt it in memory."""
        with locked():
            data = _read(self.path)
            fresh = self._from_dict(data, self.path) if data else self._copy()
            apply(fresh)
            fresh.updated_at = _now()
            write_json_atomic(self.path, fresh._to_dict())
        self.params = fresh.params
        self._resources = fresh._resources
        self.created_at, self.updated_at = fresh.created_at, fresh.updated_at

    def _copy(self) -> Ledger:
        return Ledger._from_dict(json.loads(json.dumps(self._to_dict())), self.path)

    def set_params(self, **kw: Any) -> None:
        def apply(ledger: Ledger) -> None:
            ledger.params.update(kw)

        self._change(apply)

    def record(self, kind: str, id: str, **meta: Any) -> None:
        """Note a created resource; recording the same (kind, id) again updates its meta."""
        if not kind or not id:
            raise ValueError("a ledger entry needs a kind and an id")

        def apply(ledger: Ledger) -> None:
            for entry in ledger._resources:
                if (entry.kind, entry.id) == (kind, id):
                    entry.meta.update(meta)
                    return
            ledger._resources.append(LedgerEntry(kind, id, _now(), dict(meta)))

        self._change(apply)

    def forget(self, kind: str, id: str) -> None:
        def apply(ledger: Ledger) -> None:
            ledger._resources = [e for e in ledger._resources if (e.kind, e.id) != (kind, id)]

        self._change(apply)

    def resources(self, kind: str | None = None) -> list[LedgerEntry]:
        return [e for e in self._resources if kind is None or e.kind == kind]

    def get(self, kind: str) -> LedgerEntry | None:
        matches = self.resources(kind)
        return matches[-1] if matches else None

    def delete(self) -> None:
        """Remove the state file, after a full teardown."""
        with locked():
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:
                raise _write_error(self.path, exc) from exc
        self._resources = []


@dataclass(frozen=True)
class Damaged:
    """A ledger file that could not be read: its deployment is shown as damaged."""

    name: str
    path: Path
    error: BadInput


def scan_ledgers() -> tuple[list[Ledger], list[Damaged]]:
    """Every recorded deployment by name, and the ledger files that are damaged (one damaged
    file never hides the others)."""
    directory = deployments_dir()
    if not directory.is_dir():
        return [], []
    ledgers, bad = [], []
    for path in sorted(directory.glob("*.json")):
        if not NAME_PATTERN.fullmatch(path.stem):
            continue
        try:
            data = _read(path)
            if data is not None:
                ledgers.append(Ledger._from_dict(data, path))
        except BadInput as exc:
            bad.append(Damaged(path.stem, path, exc))
    return ledgers, bad


def list_ledgers() -> list[Ledger]:
    """Every readable recorded deployment, by name."""
    return scan_ledgers()[0]


def damaged_ledgers() -> list[Damaged]:
    return scan_ledgers()[1]
