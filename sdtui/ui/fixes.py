"""The core's fix lines speak the command line ("pass --bucket NAME"); inside the app they name
the form field to change instead ("enter a “Bucket”"), and the screen that does what a
`sdtui --no-ui ...` command would. UI-free: a pure rewrite of the text."""

from __future__ import annotations

import re

from sdtui.errors import SdtuiError
from sdtui.ui.forms import FIELDS

# Flags whose field is not named after them.
_FLAG_OF = {"models": "--model"}
# Flags with no form field, and what the app offers instead.
_NOT_ON_A_FORM = {
    "--spot": "“Spot instance”",
    "--purge-bucket": "“Also delete the bucket” (teardown dialog)",
    "--purge-volume": "“Also delete the model volume” (teardown dialog)",
    "--ssh-cidr": "the --ssh-cidr flag (sdtui --ssh-cidr CIDR)",
    "--ami": "the --ami flag (sdtui --ami ID)",
    "--volume-gb": "the --volume-gb flag",
}
_COMMAND = re.compile(r"`?\(?sdtui --no-ui[^`)]*\)?`?")
# Running sdtui again, inside the app: back to the deployment screen and Resume, no restart.
RESUME = "ctrl+b, then Resume (ctrl+r)"
# Phrases of the command line's fix lines, as the app says them.
_PHRASES = (
    (re.compile(r"\brun (?:sdtui again|the same command(?: again)?)|\bthe same command\b"), RESUME),
    (re.compile(r"\bset DOCKER_HOST\b"), "enter it in “Docker host/context”"),
    (re.compile(r" or set AWS_REGION\b"), ""),
    (re.compile(r"(--purge-[a-z]+) deletes it\b"), r"tick \1 to delete it"),
)
_FLAG = re.compile(r"--[a-z][a-z-]*")


def _labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for fields in FIELDS.values():
        for f in fields:
            flag = _FLAG_OF.get(f.name, "--" + f.name.replace("_", "-"))
            labels.setdefault(flag, f"“{f.label}”")
    return {**labels, **_NOT_ON_A_FORM}


def _command(match: re.Match[str]) -> str:
    text = match.group(0)
    if "--teardown" in text:
        what = "ctrl+t on the deployment screen"
    elif "--status" in text:
        what = "the state in Existing deployments"
    else:
        what = "Provision on the deployment screen"
    return f"({what})" if text.lstrip("`").startswith("(") else what


def _outside_code(text: str, labels: dict[str, str]) -> str:
    if not _FLAG.search(text):
        return text
    text = re.sub(r"\bpass (--[a-z-]+) ([A-Z]+)\b", r"enter \2 in \1", text)
    text = re.sub(r"\bpass\b", "enter", text)
    return _FLAG.sub(lambda m: labels.get(m.group(0), m.group(0)), text)


def in_app(text: str) -> str:
    """A fix line with the form fields and screens to use instead of flags and commands
    (shell commands in backticks, such as `aws configure --profile x`, are left as they are)."""
    text = _COMMAND.sub(_command, text)
    for phrase, said in _PHRASES:
        text = phrase.sub(said, text)
    labels = _labels()
    parts = text.split("`")
    return "`".join(part if i % 2 else _outside_code(part, labels)
                    for i, part in enumerate(parts))


def error_text(exc: BaseException) -> str:
    """An error as the app shows it: the message, then its fix in the app's terms."""
    if isinstance(exc, SdtuiError):
        return exc.message + (f" — {in_app(exc.fix)}" if exc.fix else "")
    return f"{type(exc).__name__}: {exc}"
