"""The ledger: what a deployment created survives crashes, concurrent writers and upgrades."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdtui.errors import EXIT_BAD_INPUT, BadInput
from sdtui.ledger import Ledger, LedgerWriteError, damaged_ledgers, list_ledgers


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("SDTUI_STATE_DIR", str(directory))
    return directory


def ledger_file(state_dir: Path, name: str) -> Path:
    return state_dir / "deployments" / f"{name}.json"


def test_file_appears_on_first_write_and_reloads(state_dir: Path) -> None:
    ledger = Ledger.open("dev", "local")
    assert not ledger_file(state_dir, "dev").exists()
    assert Ledger.load("dev") is None

    ledger.set_params(volume="sdtui-models", models=["/m/a.ckpt"])
    ledger.record("volume", "sdtui-models")
    ledger.record("container", "abc123", image="sdtui-worker:1")

    data = json.loads(ledger_file(state_dir, "dev").read_text())
    assert data["schema"] == 1
    again = Ledger.load("dev")
    assert again is not None
    assert (again.name, again.option) == ("dev", "local")
    assert again.params == {"volume": "sdtui-models", "models": ["/m/a.ckpt"]}
    assert [(e.kind, e.id, e.meta) for e in again.resources()] == [
        ("volume", "sdtui-models", {}),
        ("container", "abc123", {"image": "sdtui-worker:1"}),
    ]


def test_record_is_idempotent_and_updates_meta() -> None:
    ledger = Ledger.open("dev", "local")
    ledger.record("volume", "v1", size=1)
    created = ledger.get("volume").created_at
    ledger.record("container", "c1")
    ledger.record("volume", "v1", size=2, files=3)

    entries = Ledger.load("dev").resources()
    assert [(e.kind, e.id) for e in entries] == [("volume", "v1"), ("container", "c1")]
    assert entries[0].meta == {"size": 2, "files": 3}
    assert entries[0].created_at == created


def test_get_returns_the_latest_of_a_kind_and_forget_removes() -> None:
    ledger = Ledger.open("dev", "local")
    ledger.record("container", "old")
    ledger.record("image", "img")
    ledger.record("container", "new")
    assert ledger.get("container").id == "new"
    assert [e.id for e in ledger.resources("container")] == ["old", "new"]
    assert ledger.get("instance") is None

    ledger.forget("container", "new")
    assert Ledger.load("dev").get("container").id == "old"


def test_set_params_merges() -> None:
    ledger = Ledger.open("cloud", "aws")
    ledger.set_params(region="us-east-1", bucket="b")
    ledger.set_params(bucket="c")
    assert Ledger.load("cloud").params == {"region": "us-east-1", "bucket": "c"}


def test_delete_and_list(state_dir: Path) -> None:
    Ledger.open("one", "local").record("volume", "v")
    Ledger.open("two", "aws").record("instance", "i-1")
    assert [(x.name, x.option) for x in list_ledgers()] == [("one", "local"), ("two", "aws")]

    Ledger.load("one").delete()
    assert not ledger_file(state_dir, "one").exists()
    assert [x.name for x in list_ledgers()] == ["two"]


def test_list_with_no_state_dir_is_empty() -> None:
    assert list_ledgers() == []


@pytest.mark.parametrize("name", ["", "Dev", "-dev", "a_b", "x" * 41, "../etc", "a b"])
def test_bad_deployment_names_are_bad_input(name: str) -> None:
    with pytest.raises(BadInput, match="invalid deployment name") as caught:
        Ledger.open(name, "local")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.fix


def test_good_names_pass() -> None:
    for name in ("a", "dev-2", "0", "x" * 40):
        Ledger.open(name, "local").record("volume", "v")
    assert len(list_ledgers()) == 4


def test_reopening_with_another_option_is_refused() -> None:
    Ledger.open("dev", "local").record("volume", "v")
    with pytest.raises(BadInput, match="already exists as a local deployment"):
        Ledger.open("dev", "aws")
    with pytest.raises(BadInput, match="unknown deployment option"):
        Ledger.open("new", "gcp")


def test_newer_schema_asks_to_upgrade(state_dir: Path) -> None:
    path = ledger_file(state_dir, "dev")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 2, "name": "dev", "option": "local"}))
    with pytest.raises(BadInput, match="newer sdtui") as caught:
        Ledger.load("dev")
    assert "upgrade" in caught.value.fix
    assert list_ledgers() == []  # the listing goes on past it, and names it
    assert ["newer sdtui" in str(bad.error) for bad in damaged_ledgers()] == [True]


def test_damaged_file_is_named(state_dir: Path) -> None:
    path = ledger_file(state_dir, "dev")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "name": "dev", "opt')
    with pytest.raises(BadInput, match=f"{path} is damaged"):
        Ledger.load("dev")


def test_failed_write_leaves_the_old_file_valid(state_dir: Path, monkeypatch) -> None:
    ledger = Ledger.open("dev", "local")
    ledger.record("volume", "v")
    before = ledger_file(state_dir, "dev").read_bytes()

    def crash(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(LedgerWriteError, match="No space left") as caught:
            ledger.record("container", "c")
    assert caught.value.fix

    assert ledger_file(state_dir, "dev").read_bytes() == before
    assert [e.id for e in Ledger.load("dev").resources()] == ["v"]
    assert [e.id for e in ledger.resources()] == ["v"]  # memory did not run ahead of disk
    leftovers = {p.name for p in (state_dir / "deployments").iterdir()}
    assert leftovers == {"dev.json", ".lock"}


def test_a_second_process_sees_what_the_first_recorded() -> None:
    first = Ledger.open("dev", "local")
    first.record("volume", "v")
    other = Ledger.load("dev")
    other.record("container", "c")
    # `first` is stale in memory, but its next write merges instead of clobbering.
    first.record("image", "i")
    assert [e.kind for e in Ledger.load("dev").resources()] == ["volume", "container", "image"]


WRITER = textwrap.dedent(
    """
    import sys
    from sdtui.ledger import Ledger
    ledger = Ledger.open("shared", "local")
    for i in range(int(sys.argv[2])):
        ledger.record("item", f"{sys.argv[1]}-{i}")
    """
)


def test_concurrent_writers_lose_no_record() -> None:
    per_process = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name, str(per_process)])
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]

    ids = {e.id for e in Ledger.load("shared").resources("item")}
    assert ids == {f"{w}-{i}" for w in "abc" for i in range(per_process)}


def test_state_file_is_private(state_dir: Path) -> None:
    Ledger.open("dev", "aws").set_params(bucket="b")
    assert ledger_file(state_dir, "dev").stat().st_mode & 0o077 == 0
