"""The docs cannot drift from the config parser."""

import re
from pathlib import Path

import pytest
import yaml

from rest_auth_provider.config import Key, config_keys, parse_config

ROOT = Path(__file__).resolve().parents[2]


def keys_table() -> str:
    """Returns the "Keys" section of the configuration reference."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    return reference.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]


def documented_default(key: Key) -> str:
    """Returns how the reference's default column starts for ``key``."""
    if key.required:
        return "required"
    if key.default is None:
        return "none"
    if key.default == ():
        return "`{}`"
    if isinstance(key.default, bool):
        return "`%s`" % ("true" if key.default else "false")
    if isinstance(key.default, float):
        return "`%g`" % key.default
    return "`%s`" % key.default


@pytest.mark.parametrize("key", config_keys(), ids=lambda key: key.dotted)
def test_every_config_key_is_in_the_reference_with_its_default(key: Key) -> None:
    # The keys come from the table that parsing and describe() read.
    rows = [line for line in keys_table().splitlines() if line.startswith("| `%s` |" % key.dotted)]
    assert len(rows) == 1, key.dotted
    default = rows[0].split(" | ")[2]
    assert default.startswith(documented_default(key)), (key.dotted, default)


def test_the_reference_documents_no_key_the_table_lacks() -> None:
    documented = re.findall(r"^\| `([^`]+)` \|", keys_table(), re.M)
    assert documented == [key.dotted for key in config_keys()]


def test_every_yaml_example_in_the_docs_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples name secret files of a deployment, which this machine has not.
    monkeypatch.setattr("rest_auth_provider.config.read_header_file", lambda path: "x")
    blocks = 0
    for page in [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            data = yaml.safe_load(block)
            entries = []
            if isinstance(data, dict):
                entries = list(data.get("modules") or []) + list(data.get("password_providers") or [])
                if "config" in data and "endpoint" in data["config"]:
                    entries.append({"module": "rest_auth_provider.RestAuthProvider", "config": data["config"]})
            for entry in entries:
                if entry.get("module") == "rest_auth_provider.RestAuthProvider":
                    parse_config(entry["config"])
                    blocks += 1
    assert blocks >= 5


def test_reliability_page_lists_every_case_of_the_hostile_suite() -> None:
    from tests.integration.test_hostile import BAD_INPUTS, FAULTS

    page = (ROOT / "docs" / "reliability.md").read_text()
    for name, (_, cause) in FAULTS.items():
        assert "| %s | 403 within timeout + 1 s; no account created; profile unchanged | `%s` |" % (name, cause) in page
    for name in BAD_INPUTS:
        assert "| %s | 4xx with an errcode | no |" % name in page


def test_reliability_page_lists_every_rest_store_case_of_the_hostile_suite() -> None:
    from tests.integration.test_hostile import REST_FAULTS

    page = (ROOT / "docs" / "reliability.md").read_text()
    for name, case in REST_FAULTS.items():
        row = "| %s | 403 within timeout + 1 s; no account created; profile unchanged | `%s` |" % (name, case.cause)
        assert row in page, row


def test_compatibility_page_matches_the_tox_matrix() -> None:
    from tests.unit.tox_matrix import compatibility_table

    assert compatibility_table() in (ROOT / "docs" / "compatibility.md").read_text()
