"""A bad config block stops Synapse at start with an error naming the key."""

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SynapseServer, module_block, supports_modules_style

STYLES = ["password_providers"] + (["modules"] if supports_modules_style() else [])


@pytest.mark.parametrize("style", STYLES)
def test_unknown_key_stops_synapse_naming_its_path(style: str, tmp_path: Path, ma1sd: Any) -> None:
    config = {"endpoint": ma1sd.url, "policy": {"login": {"profile": {"nmae": True}}}}
    server = SynapseServer(tmp_path, module_block(style, config), name="badconfig")
    server.start(wait=False)
    code = server.wait_for_exit(timeout=120)
    output = server.log_text()
    assert code != 0
    assert "policy.login.profile.nmae" in output, output[-3000:]
    assert "unknown key" in output
