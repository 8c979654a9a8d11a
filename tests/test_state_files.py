"""Damaged files in the state dir, through the real `sdtui --no-ui`: a damaged ledger is one line
naming the file and what to do (exit 2); recent.json is a convenience, so what does not fit in
it is ignored and never an error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cli_zygote
import pytest

from sdtui.ledger import Ledger, damaged_ledgers, list_ledgers


def sdtui(state: Path, *argv: str) -> tuple[int, str]:
    env = {**os.environ, "SDTUI_STATE_DIR": str(state),
           "SDTUI_CONFIG_DIR": str(state.parent / "config")}
    proc = cli_zygote.run(["--no-ui", *argv], text=True, env=env, timeout=60)
    return proc.returncode, proc.stderr


def ledger_file(state: Path, name: str, content: bytes) -> Path:
    path = state / "deployments" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def ledger_json(name: str, **fields: object) -> bytes:
    return json.dumps({"schema": 1, "name": name, "option": "local", "resources": [],
                       **fields}).encode()


DAMAGED = {
    "not UTF-8": b'{"schema": 1, "name": "caf\xe9", "option": "local"}',
    "truncated": b'{"schema": 1, "name": "dmg", "opt',
    'params "abc"': ledger_json("dmg", params="abc"),
    "params.models 5": ledger_json("dmg", params={"models": 5}),
    "params.models [5]": ledger_json("dmg", params={"models": [5]}),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_ledger_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    path = ledger_file(tmp_path / "state", "dmg", DAMAGED[case])
    code, err = sdtui(tmp_path / "state", "--name", "dmg", "--model", "x.ckpt", "--prompt", "x")
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdtui: error: "), err
    assert f"the deployment ledger {path} is damaged" in lines[0]
    assert "delete the file" in lines[0]  # what to do


def test_one_damaged_ledger_does_not_hide_the_others(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDTUI_STATE_DIR", str(tmp_path / "state"))
    Ledger("good", "local").record("volume", "v")
    for number, content in enumerate(DAMAGED.values()):
        ledger_file(tmp_path / "state", f"dmg{number}",
                    content.replace(b'"dmg"', f'"dmg{number}"'.encode()))
    # Unreadable ones are listed as damaged; a mistyped param is found when it is used.
    assert [ledger.name for ledger in list_ledgers()] == ["dmg3", "dmg4", "good"]
    assert [bad.name for bad in damaged_ledgers()] == ["dmg0", "dmg1", "dmg2"]
    assert all("is damaged" in str(bad.error) for bad in damaged_ledgers())


RECENT = {
    "settings.local.models 5": {"settings": {"local": {"models": 5}}},
    "settings.local.models [5]": {"settings": {"local": {"models": [5]}}},
    "settings.local 5": {"settings": {"local": 5}},
    "settings 5": {"settings": 5},
    "current BAD NAME": {"current": ["BAD NAME", "local"]},
    "current an unknown option": {"current": ["box", "nowhere"]},
    "last_of_option BAD NAME": {"last_of_option": {"local": "BAD NAME"}},
}


@pytest.mark.parametrize("case", list(RECENT))
def test_what_does_not_fit_in_recent_json_is_ignored(tmp_path: Path, case: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "recent.json").write_text(json.dumps({"schema": 1, **RECENT[case]}))
    code, err = sdtui(state, "--prompt", "x")
    assert "Traceback" not in err, err
    # As with no recent.json at all: the first run's deployment, which needs a model.
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdtui: error: no model given — pass --model ")
