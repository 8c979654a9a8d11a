"""Every key binding is also a command palette entry."""

from __future__ import annotations

import pytest

from sdtui.ui.screens.deploy import DeployScreen
from sdtui.ui.screens.prompt import PromptScreen
from sdtui.ui.screens.provision import ProvisionScreen


@pytest.mark.parametrize("screen_cls", [DeployScreen, ProvisionScreen, PromptScreen])
def test_every_binding_has_a_palette_entry(screen_cls: type) -> None:
    actions = {b.action for b in screen_cls.BINDINGS}
    palette = {action for _, _, action in screen_cls.PALETTE}
    assert actions <= palette
