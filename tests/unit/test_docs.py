"""The docs cannot drift from the config parser."""

import re
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
import yaml

from rest_auth_provider.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def dotted_keys(tree: Dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = prefix + key
        if isinstance(value, dict) and key not in ("headers", "header_files"):
            yield from dotted_keys(value, path + ".")
        else:
            yield path


def test_every_config_key_is_in_the_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    keys = list(dotted_keys(parse_config({"endpoint": "http://ma1sd:8090"}).describe()))
    rest = parse_config({"endpoint": "http://iam:8008", "backend": "rest"}).describe()
    keys += [k for k in dotted_keys(rest) if k not in keys]
    for derived in ("check_credentials_url", "rest_auth_url", "rest_identity_single_url"):
        keys.remove(derived)  # derived, not keys
    assert len(keys) == 20
    for key in keys:
        assert "| `%s` |" % key in reference, key


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
