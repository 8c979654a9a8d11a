"""Quitting with a deployment running: say what keeps running and what it costs, then tear it
down now, leave it running, or stay."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from sdtui.deploy.base import Deployment

# What happens to a request still running in the worker when the app goes (README: "Quitting").
RUNNING_REQUEST = ("The generation in progress goes on in the worker; its images are saved "
                   "the next time you open this deployment (here or with --no-ui).")


def notice(deployment: Deployment, state: str, cost: str, generating: bool) -> Text:
    text = Text()
    shown = {"ready": "running", "running, detached": "running"}.get(state, state)
    text.append(f"{deployment.name} ({deployment.option}) is {shown}.\n", "bold")
    if deployment.option == "batch":
        text.append("Its run goes on in AWS and its GPU instances cost money while they work: ",
                    "yellow")
        text.append(cost or "see the run screen for the cost so far", "bold yellow")
        text.append(".\nThe compute environment scales to zero when the run ends; Resume "
                    "watches the run and collects its images.\n")
    elif deployment.option == "aws":
        text.append("Its GPU instance costs money until it stops: ", "yellow")
        text.append(cost or "see Existing deployments for the price", "bold yellow")
        text.append(".\nLeft running, it stops itself after its idle auto-stop time.\n")
    else:
        text.append("Left running, its container keeps the model in this machine's memory "
                    "(no cloud cost); the next run attaches at once.\n")
    if state == "provisioning":
        text.append("Provisioning stops after its current step; what it made is kept, and "
                    "Resume or Tear down finish the job.\n")
    if generating:
        text.append(RUNNING_REQUEST + "\n", "cyan")
    return text


class QuitModal(ModalScreen[str | None]):
    """Leaves the app at once, or returns "teardown" or None (stay)."""

    HELP_TITLE = "quit"
    BINDINGS = [
        Binding("t", "choose('teardown')", "Tear down now",
                tooltip="Tear the deployment down, then quit (the models are kept)"),
        Binding("l", "choose('leave')", "Leave running",
                tooltip="Quit and leave the deployment running"),
        Binding("escape", "choose(None)", "Cancel", tooltip="Stay in the app"),
    ]

    def __init__(self, deployment: Deployment, state: str, cost: str, generating: bool) -> None:
        super().__init__()
        self.deployment = deployment
        self.text = notice(deployment, state, cost, generating)

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog"):
            yield Label("Quit sdtui?", id="quit-title")
            yield Static(self.text, id="quit-notice")
            with Horizontal(id="quit-buttons"):
                yield Button("Tear down now (t)", id="teardown", variant="error")
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def action_choose(self, choice: str | None) -> None:
        if choice == "leave":
            self.app.leave()  # at once: no screen to pop first, the app is going
        else:
            self.dismiss(choice)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose(None if event.button.id == "cancel" else event.button.id)
