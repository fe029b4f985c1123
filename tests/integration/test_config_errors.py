"""A bad config block stops Synapse at start with an error naming the key."""

from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from support.harness import SynapseServer, module_block, supports_modules_style
from tests.integration.conftest import with_backend

STYLES = ["password_providers"] + (["modules"] if supports_modules_style() else [])
STYLE = "modules" if supports_modules_style() else "password_providers"

# name -> (config keys besides endpoint, without backend; key path and words the error must show)
BACKEND_ERRORS: Dict[str, Tuple[Dict[str, Any], str, str]] = {
    "rest: with backend ma1sd": ({"rest": {"auth": "/auth"}}, "rest", "only read with 'backend: rest'"),
    "empty rest.auth": ({"backend": "rest", "rest": {"auth": ""}}, "rest.auth", "must not be empty"),
    "threepid_login.lookup_path with backend rest": (
        {"backend": "rest", "threepid_login": {"lookup_path": "/lookup"}},
        "threepid_login.lookup_path",
        "belongs to 'backend: ma1sd'",
    ),
}


def stops_with(style: str, tmp_path: Path, config: Dict[str, Any]) -> str:
    """Starts Synapse with the module's ``config``; returns its output once it exited with an error."""
    server = SynapseServer(tmp_path, module_block(style, config), name="badconfig")
    server.start(wait=False)
    code = server.wait_for_exit(timeout=120)
    output = server.log_text()
    assert code != 0, output[-3000:]
    return output


@pytest.mark.parametrize("style", STYLES)
def test_unknown_key_stops_synapse_naming_its_path(style: str, tmp_path: Path, ma1sd: Any) -> None:
    config = with_backend({"endpoint": ma1sd.url, "policy": {"login": {"profile": {"nmae": True}}}})
    output = stops_with(style, tmp_path, config)
    assert "policy.login.profile.nmae" in output, output[-3000:]
    assert "unknown key" in output


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=pytest.mark.backend("rest" if "backend" in keys else "ma1sd"))
        for name, (keys, _, _) in BACKEND_ERRORS.items()
    ],
)
def test_backend_keys_in_the_wrong_place_stop_synapse_naming_them(case: str, tmp_path: Path, ma1sd: Any) -> None:
    keys, path, words = BACKEND_ERRORS[case]
    output = stops_with(STYLE, tmp_path, dict(keys, endpoint=ma1sd.url))
    assert path in output and words in output, output[-3000:]
