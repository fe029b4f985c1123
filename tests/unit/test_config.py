"""Unit tests of ``parse_config``: defaults, the old provider's keys, and errors that name the offending key."""

import copy
import dataclasses
import os
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

import rest_auth_provider.config
from rest_auth_provider.config import (
    CHECK_CREDENTIALS_PATH,
    DEFAULT_LOOKUP_PATH,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_REST_AUTH,
    DEFAULT_REST_IDENTITY_SINGLE,
    KEYS,
    MAX_HEADER_FILE_SIZE,
    ConfigProblem,
    Key,
    ProviderConfig,
    RestConfig,
    parse_config,
    read_header_file,
)
from rest_auth_provider.provider import RestAuthProvider
from tests.unit.conftest import run_without_synapse

try:  # Synapse >= 1.35 exports it for modules.
    from synapse.module_api.errors import ConfigError
except ImportError:  # Synapse 1.19
    from synapse.config._base import ConfigError

ENDPOINT = "http://ma1sd:8090"
UNKNOWN = "unknown key (check its spelling and indentation)"

# The ``config:`` block of the old single-file provider's README, every key set
# to the opposite of its default so that each one is seen to be read.
OLD_PROVIDER_BLOCK = """
endpoint: "http://change.me.example.com:12345"
policy:
  registration:
    username:
      enforceLowercase: false
    profile:
      name: false
  login:
    profile:
      name: true
  all:
    threepid:
      update: false
      replace: true
"""


def where(e: ConfigProblem) -> str:
    """Returns the dotted path (inside ``config:``) that a ConfigProblem names."""
    return ".".join(e.path)


def message(e: ConfigProblem) -> str:
    """Returns the error message without the path."""
    return e.message


def config_error(raw: Any) -> ConfigProblem:
    """Returns the ConfigProblem that parsing ``raw`` raises."""
    with pytest.raises(ConfigProblem) as info:
        parse_config(raw)
    return info.value


def minimal(**extra: Any) -> Dict[str, Any]:
    raw: Dict[str, Any] = {"endpoint": ENDPOINT}
    raw.update(extra)
    return raw


def nested(path: Tuple[str, ...], value: Any) -> Dict[str, Any]:
    """Returns ``{"endpoint": ..., path[0]: {path[1]: ... value}}``."""
    inner: Any = value
    for key in reversed(path[1:]):
        inner = {key: inner}
    return minimal(**{path[0]: inner})


# -- ConfigProblem, and Synapse's ConfigError made from it ------------------------


def test_config_problem_holds_path_and_message_as_data() -> None:
    error = config_error(nested(("policy", "login", "profile", "nmae"), True))
    assert error.path == ("policy", "login", "profile", "nmae")
    assert error.message == UNKNOWN + "; did you mean 'name'?"
    assert str(error) == "config.policy.login.profile.nmae: " + UNKNOWN + "; did you mean 'name'?"
    block = config_error(["endpoint"])
    assert block.path == ()
    assert block.message == "expected a mapping, got a list"
    assert str(block) == "config: expected a mapping, got a list"


def test_provider_turns_a_config_problem_into_synapses_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        RestAuthProvider.parse_config(nested(("policy", "login", "profile", "nmae"), True))
    error = info.value
    assert not isinstance(error, ConfigProblem)
    assert error.__cause__ is None and error.__suppress_context__
    path = getattr(error, "path", None)
    if path is not None:
        assert list(path) == ["policy", "login", "profile", "nmae"]
        assert str(error.msg) == UNKNOWN + "; did you mean 'name'?"
    else:  # Synapse before 1.2x: no path in ConfigError, so it is in the message.
        assert str(error) == (
            "rest_auth_provider: config.policy.login.profile.nmae: " + UNKNOWN + "; did you mean 'name'?"
        )
    assert RestAuthProvider.parse_config({"endpoint": ENDPOINT}) == parse_config({"endpoint": ENDPOINT})


# Run by run_without_synapse: in a child interpreter in which any import of Synapse fails.
WITHOUT_SYNAPSE = textwrap.dedent(
    """
    import sys

    # A normal import, package __init__ included (which must not import the
    # provider, and so Synapse, before RestAuthProvider is asked for).
    import rest_auth_provider.config
    from rest_auth_provider.config import ConfigProblem, parse_config

    print(parse_config({"endpoint": "http://ma1sd:8090"}).endpoint)
    try:
        parse_config({"endpiont": "http://ma1sd:8090"})
    except ConfigProblem as e:
        print(e)
    print(sorted(name for name in sys.modules if name.split(".")[0] == "synapse"))
    """
)


def test_config_imports_and_parses_without_synapse() -> None:
    # Imports rest_auth_provider.config the ordinary way: this needs the
    # package's __init__ not to import the provider eagerly.
    result = run_without_synapse(WITHOUT_SYNAPSE, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        ENDPOINT,
        "config.endpiont: " + UNKNOWN + "; did you mean 'endpoint'?",
        "[]",
    ]


# -- defaults -----------------------------------------------------------------


def test_minimal_config_has_the_old_defaults() -> None:
    config = parse_config({"endpoint": ENDPOINT})
    assert isinstance(config, ProviderConfig)
    assert config.endpoint == ENDPOINT
    assert config.timeout == 10.0
    assert isinstance(config.timeout, float)
    assert config.max_response_size == DEFAULT_MAX_RESPONSE_SIZE
    assert config.max_concurrent_requests == DEFAULT_MAX_CONCURRENT_REQUESTS
    assert config.profile_recheck_interval == 300
    assert config.tls.ca_file is None
    assert config.tls.client_certificate is None
    assert config.tls.client_key is None
    assert config.headers == ()
    assert config.header_files == ()
    assert config.threepid_login.enabled is True
    assert config.threepid_login.lookup_path == DEFAULT_LOOKUP_PATH
    assert config.policy.registration_profile_name is True
    assert config.policy.login_profile_name is False
    assert config.policy.threepid_update is True
    assert config.policy.threepid_replace is False
    assert config.policy.registration_enforce_lowercase is True


@pytest.mark.parametrize(
    "raw",
    [
        minimal(policy=None, tls=None, headers=None, header_files=None, threepid_login=None),
        minimal(policy={}, tls={}, headers={}, header_files={}, threepid_login={}),
        minimal(policy={"registration": None, "login": None, "all": None}),
        minimal(policy={"registration": {"username": None, "profile": None}, "login": {"profile": None}}),
        minimal(policy={"all": {"threepid": {"update": None, "replace": None}}}, timeout=None),
    ],
)
def test_empty_or_null_sections_mean_defaults(raw: Dict[str, Any]) -> None:
    assert parse_config(raw) == parse_config({"endpoint": ENDPOINT})


def test_old_provider_block_parses_with_its_values() -> None:
    config = parse_config(yaml.safe_load(OLD_PROVIDER_BLOCK))
    assert config.endpoint == "http://change.me.example.com:12345"
    assert config.policy.registration_enforce_lowercase is False
    assert config.policy.registration_profile_name is False
    assert config.policy.login_profile_name is True
    assert config.policy.threepid_update is False
    assert config.policy.threepid_replace is True
    # Nothing else changes.
    assert config.timeout == 10.0
    assert config.threepid_login.enabled is True


def test_old_provider_block_with_default_values() -> None:
    raw = yaml.safe_load(OLD_PROVIDER_BLOCK)
    raw["policy"] = {
        "registration": {"username": {"enforceLowercase": True}, "profile": {"name": True}},
        "login": {"profile": {"name": False}},
        "all": {"threepid": {"update": True, "replace": False}},
    }
    assert parse_config(raw).policy == parse_config({"endpoint": ENDPOINT}).policy


def test_every_key_set(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    raw = {
        "endpoint": "https://ma1sd.example.org/base/",
        "timeout": 2.5,
        "max_response_size": 2048,
        "max_concurrent_requests": 7,
        "profile_recheck_interval": 0,
        "tls": {"ca_file": "/etc/ca.pem", "client_certificate": "/etc/c.pem", "client_key": "/etc/k.pem"},
        "headers": {"Authorization": "Bearer s3cret", "X-Extra": ""},
        "header_files": {"X-Token": str(token)},
        "threepid_login": {"enabled": False, "lookup_path": "/custom/lookup"},
        "policy": yaml.safe_load(OLD_PROVIDER_BLOCK)["policy"],
    }
    config = parse_config(copy.deepcopy(raw))
    assert config.timeout == 2.5
    assert config.max_response_size == 2048
    assert config.max_concurrent_requests == 7
    assert config.profile_recheck_interval == 0
    assert config.tls.ca_file == "/etc/ca.pem"
    assert config.tls.client_certificate == "/etc/c.pem"
    assert config.tls.client_key == "/etc/k.pem"
    assert config.headers == (("Authorization", "Bearer s3cret"), ("X-Extra", ""))
    assert config.header_files == (("X-Token", str(token)),)
    assert config.threepid_login.enabled is False
    assert config.lookup_url == "https://ma1sd.example.org/base/custom/lookup"
    assert config.check_credentials_url == "https://ma1sd.example.org/base" + CHECK_CREDENTIALS_PATH


def test_integer_timeout_becomes_float() -> None:
    config = parse_config(minimal(timeout=3))
    assert config.timeout == 3.0
    assert isinstance(config.timeout, float)
    assert parse_config(minimal(timeout=300)).timeout == 300.0


def test_parse_does_not_modify_its_input() -> None:
    raw = yaml.safe_load(OLD_PROVIDER_BLOCK)
    before = copy.deepcopy(raw)
    parse_config(raw)
    assert raw == before


# -- required endpoint --------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}, {"endpoint": None}, {"policy": {}}])
def test_endpoint_is_required(raw: Any) -> None:
    # Synapse before 1.27 passes None for a module without a ``config:`` block.
    error = config_error(raw)
    assert where(error) == "endpoint"
    assert message(error).startswith("required")


@pytest.mark.parametrize("raw", [[], ["endpoint"], "http://ma1sd:8090", 3, True])
def test_config_that_is_not_a_mapping(raw: Any) -> None:
    error = config_error(raw)
    assert where(error) == ""
    assert "expected a mapping" in message(error)


# -- unknown keys -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ("endpiont",),
        ("Endpoint_extra",),
        ("policy", "registraton"),
        ("policy", "registration", "usernme"),
        ("policy", "registration", "username", "enforcelowercase"),
        ("policy", "registration", "profile", "nmae"),
        ("policy", "login", "profil"),
        ("policy", "login", "profile", "nmae"),
        ("policy", "all", "threepids"),
        ("policy", "all", "threepid", "updat"),
        ("policy", "all", "threepid", "replace_all"),
        ("tls", "cafile"),
        ("threepid_login", "enable"),
    ],
)
def test_unknown_key_is_named_by_its_path(path: Tuple[str, ...]) -> None:
    error = config_error(nested(path, True))
    assert where(error) == ".".join(path)
    assert message(error).startswith("unknown key")


def test_unknown_key_next_to_known_ones() -> None:
    raw = yaml.safe_load(OLD_PROVIDER_BLOCK)
    raw["policy"]["login"]["profile"]["nmae"] = True
    error = config_error(raw)
    assert where(error) == "policy.login.profile.nmae"


def test_unknown_non_string_key() -> None:
    error = config_error({"endpoint": ENDPOINT, "policy": {1: True}})
    assert where(error) == "policy.1"
    assert message(error) == UNKNOWN


@pytest.mark.parametrize(
    "raw,path,suggested",
    [
        (minimal(timout=5), "timout", "timeout"),
        (minimal(Endpoint="http://x"), "Endpoint", "endpoint"),
        (minimal(max_concurrent_request=5), "max_concurrent_request", "max_concurrent_requests"),
        (minimal(tls={"cafile": "/ca.pem"}), "tls.cafile", "ca_file"),
        (minimal(threepid_login={"enable": True}), "threepid_login.enable", "enabled"),
        (nested(("policy", "registraton"), {}), "policy.registraton", "registration"),
        (nested(("policy", "registration", "username", "enforcelowercase"), True), None, "enforceLowercase"),
        (nested(("policy", "all", "threepid", "updat"), True), "policy.all.threepid.updat", "update"),
        ({"endpoint": ENDPOINT, "backend": "rest", "rest": {"auht": "/a"}}, "rest.auht", "auth"),
        ({"endpoint": ENDPOINT, "backend": "rest", "rest": {"identity": {"singel": ""}}}, None, "single"),
    ],
)
def test_unknown_key_names_the_closest_known_key(raw: Dict[str, Any], path: Any, suggested: str) -> None:
    error = config_error(raw)
    if path is not None:
        assert where(error) == path
    assert message(error) == "%s; did you mean '%s'?" % (UNKNOWN, suggested)


@pytest.mark.parametrize(
    "raw,path",
    [
        (minimal(zzz=1), "zzz"),
        (minimal(tls={"verify": False}), "tls.verify"),
        (nested(("policy", "login", "profile", "avatar"), True), "policy.login.profile.avatar"),
    ],
)
def test_unknown_key_without_a_close_one_gets_no_suggestion(raw: Dict[str, Any], path: str) -> None:
    error = config_error(raw)
    assert where(error) == path
    assert message(error) == UNKNOWN


@pytest.mark.parametrize(
    "raw,path,suggestion",
    [
        ({"endpiont": ENDPOINT}, "endpiont", "; did you mean 'endpoint'?"),
        ({"endpiont": ENDPOINT, "backend": "rest", "rest": {"auth": "/a"}}, "endpiont", "; did you mean 'endpoint'?"),
        ({"policy": {"login": {"profil": {"name": True}}}}, "policy.login.profil", "; did you mean 'profile'?"),
        ({"tls": {"ca_fiel": "/ca.pem"}}, "tls.ca_fiel", "; did you mean 'ca_file'?"),
    ],
)
def test_unknown_key_is_reported_before_the_missing_endpoint(raw: Dict[str, Any], path: str, suggestion: str) -> None:
    # A misspelt ``endpiont:`` was once reported only as "endpoint: required".
    error = config_error(raw)
    assert where(error) == path
    assert message(error) == UNKNOWN + suggestion


def test_unknown_key_is_reported_before_a_wrong_value() -> None:
    error = config_error(minimal(timeout="soon", policy={"all": {"threepid": {"update": "yes", "replce": True}}}))
    assert where(error) == "policy.all.threepid.replce"
    assert message(error) == UNKNOWN + "; did you mean 'replace'?"
    # Keys are checked level by level, the outer level first.
    error = config_error(minimal(tls={"cafile": "/ca.pem"}, timeot=3))
    assert where(error) == "timeot"


# -- wrong types --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ("policy", "registration", "username", "enforceLowercase"),
        ("policy", "registration", "profile", "name"),
        ("policy", "login", "profile", "name"),
        ("policy", "all", "threepid", "update"),
        ("policy", "all", "threepid", "replace"),
        ("threepid_login", "enabled"),
    ],
)
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, [], {}])
def test_boolean_keys_refuse_other_types(path: Tuple[str, ...], value: Any) -> None:
    error = config_error(nested(path, value))
    assert where(error) == ".".join(path)
    assert "expected true or false" in message(error)


@pytest.mark.parametrize("key", ["timeout", "max_response_size", "max_concurrent_requests", "profile_recheck_interval"])
@pytest.mark.parametrize("value", [True, False, "10", [10], {"s": 10}])
def test_number_keys_refuse_other_types(key: str, value: Any) -> None:
    error = config_error(minimal(**{key: value}))
    assert where(error) == key
    assert "expected a" in message(error) and "number" in message(error)


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, 300.5, 301, float("inf"), float("nan")])
def test_timeout_out_of_range(value: float) -> None:
    error = config_error(minimal(timeout=value))
    assert where(error) == "timeout"
    assert "greater than 0" in message(error)


@pytest.mark.parametrize("value", [10**400, -(10**400), 301.0, 1e308])
def test_huge_timeout_is_a_config_error(value: float) -> None:
    # A 400-digit integer once made '%g' raise OverflowError instead.
    error = config_error(minimal(timeout=value))
    assert where(error) == "timeout"
    assert len(message(error)) < 200


@pytest.mark.parametrize(
    "key,value",
    [
        ("max_response_size", 1023),
        ("max_response_size", 16 * 1024 * 1024 + 1),
        ("max_response_size", 4096.0),
        ("max_concurrent_requests", 0),
        ("max_concurrent_requests", -3),
        ("max_concurrent_requests", 10001),
        ("profile_recheck_interval", -1),
        ("profile_recheck_interval", 86401),
        ("profile_recheck_interval", 30.5),
    ],
)
def test_integer_keys_out_of_range_or_not_whole(key: str, value: Any) -> None:
    error = config_error(minimal(**{key: value}))
    assert where(error) == key
    assert "whole number" in message(error)


@pytest.mark.parametrize(
    "path",
    [
        ("policy",),
        ("policy", "registration"),
        ("policy", "registration", "username"),
        ("policy", "registration", "profile"),
        ("policy", "login"),
        ("policy", "login", "profile"),
        ("policy", "all"),
        ("policy", "all", "threepid"),
        ("tls",),
        ("headers",),
        ("header_files",),
        ("threepid_login",),
    ],
)
@pytest.mark.parametrize("value", [["name", True], "yes", True, 5])
def test_sections_refuse_non_mappings(path: Tuple[str, ...], value: Any) -> None:
    error = config_error(nested(path, value))
    assert where(error) == ".".join(path)
    assert "expected a mapping" in message(error)


def test_list_for_mapping_names_list() -> None:
    error = config_error(minimal(policy=[{"login": {"profile": {"name": True}}}]))
    assert where(error) == "policy"
    assert "a list" in message(error)


@pytest.mark.parametrize("key", ["ca_file", "client_certificate", "client_key"])
@pytest.mark.parametrize("value", ["", 1, True, ["/a"]])
def test_tls_strings(key: str, value: Any) -> None:
    error = config_error({"endpoint": "https://ma1sd", "tls": {key: value}})
    assert where(error) == "tls." + key
    assert "non-empty string" in message(error)


@pytest.mark.parametrize("value", ["", 5, True, ["/a"]])
def test_endpoint_must_be_a_non_empty_string(value: Any) -> None:
    error = config_error({"endpoint": value})
    assert where(error) == "endpoint"
    assert "non-empty string" in message(error)


# -- endpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://ma1sd:8090",
        "http://ma1sd:8090/",
        "https://ma1sd.example.org",
        "http://127.0.0.1:8090",
        "http://[::1]:8090",
        "http://ma1sd:8090/prefix",
        "HTTPS://MA1SD.example.org",
    ],
)
def test_valid_endpoints(endpoint: str) -> None:
    assert parse_config({"endpoint": endpoint}).endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint,words",
    [
        ("ftp://ma1sd:8090", "http:// or https://"),
        ("ma1sd:8090", "http:// or https://"),
        ("ma1sd", "http:// or https://"),
        ("//ma1sd:8090", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("https://:8090", "no host"),
        ("http://ma1sd:8090/?token=x", "query or fragment"),
        ("http://ma1sd:8090/path?a=b", "query or fragment"),
        ("http://ma1sd:8090/#frag", "query or fragment"),
        ("http://user:pass@ma1sd:8090", "credentials"),
        ("http://user@ma1sd:8090", "credentials"),
        ("http://:secret@ma1sd:8090", "credentials"),
        ("http://ma1sd:port", "invalid port"),
        ("http://ma1sd:99999", "invalid port"),
        ("http://ma1sd:65536", "invalid port"),
    ],
)
def test_invalid_endpoints(endpoint: str, words: str) -> None:
    error = config_error({"endpoint": endpoint})
    assert where(error) == "endpoint"
    assert words in message(error)


# Passwords that fool a URL parser ('#', '?' and '/' end the authority; '@' and
# '%23' look like the end of the credentials or an escaped '#'). Each has two
# distinctive halves, neither of which may appear in any error.
NASTY_PASSWORDS = ["Pa55#w0rd!", "Pa55/w0rd", "Pa55?w0rd", "Pa55@w0rd", "Pa55%23w0rd", "Pa55#?/@w0rd", "Pa55 w0rd"]
ENDPOINTS_WITH_CREDENTIALS = [
    "http://svc:{pw}@ma1sd.internal:8090",
    "https://svc:{pw}@ma1sd.internal:8090/prefix",
    "http://svc:{pw}@ma1sd:8090/?x=1",
    "http://svc:{pw}@ma1sd:8090/#frag",
    "http://svc:{pw}@:8090",
    "ftp://svc:{pw}@ma1sd",
    "http://svc:{pw}@ma1sd:8090\n",
    "http://svc:{pw}@[::1",
    "http://svc:{pw}@ma1sd:port",
    "http://svc:{pw}@ma1sd.\u00efnternal:8090",
    "svc:{pw}@ma1sd:8090",
    "http://{pw}@ma1sd:8090",
    "http://:{pw}@ma1sd:8090",
]


def assert_no_password(text: str, password: str) -> None:
    """Asserts that neither the password nor a distinctive half of it is in ``text``."""
    assert password not in text
    assert "Pa55" not in text
    assert "w0rd" not in text


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
@pytest.mark.parametrize("template", ENDPOINTS_WITH_CREDENTIALS)
def test_credentials_are_never_echoed(template: str, password: str) -> None:
    error = config_error({"endpoint": template.format(pw=password)})
    assert where(error) == "endpoint"
    assert "credentials" in message(error)
    assert "'headers' or 'header_files'" in message(error)
    assert_no_password(str(error), password)
    assert_no_password(message(error), password)
    assert_no_password(repr(error.args), password)


def test_credentials_message_is_the_same_whatever_the_url() -> None:
    # Checked first: no other problem of the URL (which would show it) is reported.
    first = message(config_error({"endpoint": "http://svc:Pa55#w0rd!@ma1sd.internal:8090"}))
    assert message(config_error({"endpoint": "ftp://svc:x@ma1sd?q#f"})) == first
    assert message(config_error({"endpoint": "http://ma1sd/a@b"})) == first


@pytest.mark.parametrize(
    "endpoint,hint",
    [
        ("http://ma1sd.ex\u00e4mple.org:8090", "'http://ma1sd.xn--exmple-cua.org:8090'"),
        ("https://b\u00fccher.example/ma1sd", "'https://xn--bcher-kva.example/ma1sd'"),
        ("http://ma1sd:8090/p\u00e4th", "punycode"),
        ("http://ma1sd:8090/\u202eevil", "punycode"),
        ("http://ma1sd\uff0eexample:8090", "punycode"),
    ],
)
def test_non_ascii_endpoint_is_refused_with_the_ascii_form(endpoint: str, hint: str) -> None:
    # Twisted cannot send a request to such a URL: every login would be an "unexpected error".
    error = config_error({"endpoint": endpoint})
    assert where(error) == "endpoint"
    assert "non-ASCII" in message(error)
    assert hint in message(error)
    assert "\u202e" not in str(error)


@pytest.mark.parametrize("endpoint", ["http://[::1:8090", "http://ma1sd]:8090", "http://[::1"])
def test_bad_ipv6_literal_is_a_config_error(endpoint: str) -> None:
    # urlsplit raises ValueError for these; it must come out as a ConfigError.
    error = config_error({"endpoint": endpoint})
    assert where(error) == "endpoint"


@pytest.mark.parametrize("endpoint", ["http://ma1sd:8090?", "http://ma1sd:8090/?", "http://ma1sd:8090/#", "http://h#"])
def test_empty_query_or_fragment_is_refused(endpoint: str) -> None:
    # urlsplit reports an empty query for a bare '?', and join_url would then
    # put the check_credentials path into the query.
    error = config_error({"endpoint": endpoint})
    assert where(error) == "endpoint"
    assert "query or fragment" in message(error)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://ma1sd:8090\n",
        "http://ma\tsd:8090",
        " http://ma1sd:8090",
        "http://ma1sd:8090 ",
        "http://ma\x00sd",
        "http://a\x7f",
    ],
)
def test_white_space_and_control_characters_in_endpoint_are_refused(endpoint: str) -> None:
    # urlsplit silently drops tab and newline, so they must be refused before it.
    error = config_error({"endpoint": endpoint})
    assert where(error) == "endpoint"
    assert "white space or control characters" in message(error)


# -- URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint,expected",
    [
        ("http://ma1sd:8090", "http://ma1sd:8090/_matrix-internal/identity/v1/check_credentials"),
        ("http://ma1sd:8090/", "http://ma1sd:8090/_matrix-internal/identity/v1/check_credentials"),
        ("http://ma1sd:8090//", "http://ma1sd:8090/_matrix-internal/identity/v1/check_credentials"),
        ("https://id.example.org/ma1sd", "https://id.example.org/ma1sd/_matrix-internal/identity/v1/check_credentials"),
        (
            "https://id.example.org/ma1sd/",
            "https://id.example.org/ma1sd/_matrix-internal/identity/v1/check_credentials",
        ),
    ],
)
def test_check_credentials_url_has_exactly_one_slash(endpoint: str, expected: str) -> None:
    url = parse_config({"endpoint": endpoint}).check_credentials_url
    assert url == expected
    assert "//" not in url.split("://", 1)[1]


@pytest.mark.parametrize("endpoint", ["http://ma1sd:8090", "http://ma1sd:8090/"])
def test_lookup_url(endpoint: str) -> None:
    assert parse_config({"endpoint": endpoint}).lookup_url == "http://ma1sd:8090/_matrix/identity/api/v1/lookup"


@pytest.mark.parametrize("lookup_path", ["relative/path", "", 5])
def test_lookup_path_must_be_an_absolute_path(lookup_path: Any) -> None:
    error = config_error(minimal(threepid_login={"lookup_path": lookup_path}))
    assert where(error) == "threepid_login.lookup_path"


@pytest.mark.parametrize(
    "lookup_path,words",
    [
        ("/lookup?x=1", "query or fragment"),
        ("/lookup#frag", "query or fragment"),
        ("/lookup?", "query or fragment"),
        ("/look up", "white space or control characters"),
        ("/lookup ", "white space or control characters"),
        ("/lookup\r\nX-Injected: 1", "white space or control characters"),
        ("/lookup\n", "white space or control characters"),
        ("/look\tup", "white space or control characters"),
        ("/look\x00up", "white space or control characters"),
        ("/look\x1b[2Jup", "white space or control characters"),
        ("/look\x7fup", "white space or control characters"),
        ("/l\u00f6\u00f6kup", "non-ASCII"),
        ("/lookup\u202e", "non-ASCII"),
        ("/lookup\u00a0", "white space"),
    ],
)
def test_lookup_path_that_cannot_be_requested_is_refused(lookup_path: str, words: str) -> None:
    # Each of these once passed and then broke or silently changed every lookup.
    error = config_error(minimal(threepid_login={"lookup_path": lookup_path}))
    assert where(error) == "threepid_login.lookup_path"
    assert words in message(error)
    assert str(error).isprintable()


@pytest.mark.parametrize("lookup_path", ["/custom/lookup", "/_matrix/identity/v2/lookup", "/a%20b/c~d-e_f.g"])
def test_valid_lookup_paths(lookup_path: str) -> None:
    assert parse_config(minimal(threepid_login={"lookup_path": lookup_path})).threepid_login.lookup_path == lookup_path


# -- headers ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["headers", "header_files"])
def test_valid_header_names(key: str, tmp_path: Path) -> None:
    names = ["Authorization", "X-Api-Key", "x_custom.header~1", "A!#$%&'*+-.^_`|~"]
    (tmp_path / "v").write_text("v\n")
    config = parse_config(minimal(**{key: {name: str(tmp_path / "v") for name in names}}))
    assert [name for name, _ in getattr(config, key)] == names


@pytest.mark.parametrize("key", ["headers", "header_files"])
@pytest.mark.parametrize(
    "name,shown",
    [
        ("Bad Header", "Bad Header"),
        ("X:Y", "X:Y"),
        ("", ""),
        ("X-Ünïcode", "X-Ünïcode"),
        ("X(1)", "X(1)"),
        ("X/Y", "X/Y"),
        # A key's control characters are escaped where the error shows its path.
        ("X\nY", "X\\x0aY"),
        ("X\x1b[2JY", "X\\x1b[2JY"),
    ],
)
def test_invalid_header_names(key: str, name: str, shown: str) -> None:
    error = config_error(minimal(**{key: {name: "v"}}))
    assert where(error) == key + "." + shown
    assert "not a valid HTTP header name" in message(error)


def test_unknown_key_with_control_characters_is_shown_escaped() -> None:
    error = config_error(minimal(**{"timeout\nOK forged": 1}))
    assert where(error) == "timeout\\x0aOK forged"
    assert "\n" not in str(error)


@pytest.mark.parametrize("key", ["headers", "header_files"])
def test_non_string_header_name(key: str) -> None:
    error = config_error(minimal(**{key: {42: "v"}}))
    assert where(error) == key + ".42"


@pytest.mark.parametrize("key", ["headers", "header_files"])
@pytest.mark.parametrize(
    "name", ["Content-Type", "content-type", "Host", "HOST", "Content-Length", "Transfer-Encoding"]
)
def test_reserved_headers_are_refused(key: str, name: str) -> None:
    error = config_error(minimal(**{key: {name: "v"}}))
    assert where(error) == key + "." + name
    assert "set by the module" in message(error)


@pytest.mark.parametrize("key", ["headers", "header_files"])
@pytest.mark.parametrize("value", [None, 5, True, ["a"], {"a": "b"}, "a\nb", "a\r\nX-Injected: 1", "a\rb"])
def test_header_values_must_be_single_line_strings(key: str, value: Any) -> None:
    error = config_error(minimal(**{key: {"X-Token": value}}))
    assert where(error) == key + ".X-Token"
    assert "single-line string" in message(error)


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"S3CRET-token\n", "S3CRET-token"),
        (b"S3CRET-token\r\n", "S3CRET-token"),
        (b"S3CRET-token", "S3CRET-token"),
        (b"  Bearer S3CRET\ttoken \t\n", "Bearer S3CRET\ttoken"),
    ],
)
def test_header_file_value(tmp_path: Path, content: bytes, expected: str) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    assert read_header_file(str(token)) == expected
    assert parse_config(minimal(header_files={"X-Token": str(token)})).header_files == (("X-Token", str(token)),)


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\r\n", "is empty"),
        (b" \t \n", "is empty"),
        (b"S3CRET\n\n", "more than one line"),
        (b"S3CRET\nX-Injected: 1\n", "more than one line"),
        (b"S3CRET\r\nX-Injected: 1", "more than one line"),
        (b"S3CRET\rX", "more than one line"),
        (b"S3CRET\r", "more than one line"),
        (b"\nS3CRET", "more than one line"),
        (b"S3C\x00RET", "control characters"),
        (b"S3C\x1b[2JRET\n", "control characters"),
        (b"S3C\x08RET", "control characters"),
        (b"S3CRET\x7f", "control characters"),
        ("S3CR\u00c9T\n".encode(), "non-ASCII"),
        ("S3CR\u00c9T\n".encode("latin-1"), "non-ASCII"),
        (b"\xef\xbb\xbfS3CRET\n", "non-ASCII"),
    ],
)
def test_header_file_that_would_send_a_wrong_header_is_refused(tmp_path: Path, content: bytes, words: str) -> None:
    # Once folded into a wrong header value and sent silently; now Synapse does not start.
    token = tmp_path / "token"
    token.write_bytes(content)
    error = config_error(minimal(header_files={"X-Token": str(token)}))
    assert where(error) == "header_files.X-Token"
    assert words in message(error)
    assert str(token) in message(error)
    assert "S3C" not in str(error)
    assert "RET" not in str(error)
    with pytest.raises(ValueError) as info:
        read_header_file(str(token))
    assert type(info.value) is ValueError
    assert words in str(info.value)
    assert "S3C" not in str(info.value)


def test_huge_header_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"S3CRET" * 100_000)
    error = config_error(minimal(header_files={"X-Token": str(token)}))
    assert where(error) == "header_files.X-Token"
    assert "larger than" in message(error)
    assert "S3C" not in str(error)
    # The largest allowed value is fine.
    token.write_bytes(b"a" * (MAX_HEADER_FILE_SIZE - 1) + b"\n")
    assert read_header_file(str(token)) == "a" * (MAX_HEADER_FILE_SIZE - 1)


@pytest.mark.parametrize("name", ["missing", "."])
def test_unreadable_header_file_is_refused(tmp_path: Path, name: str) -> None:
    path = os.path.join(str(tmp_path), name)
    error = config_error(minimal(header_files={"X-Token": path}))
    assert where(error) == "header_files.X-Token"
    assert message(error).startswith("cannot read %s (" % path)
    with pytest.raises(ValueError):
        read_header_file(path)


def test_header_file_path_is_shown_escaped(tmp_path: Path) -> None:
    # Control characters in the path are refused as in any header value; a
    # format character (right-to-left override) gets as far as reading the file.
    error = config_error(minimal(header_files={"X-Token": str(tmp_path / "a\u202eb")}))
    assert where(error) == "header_files.X-Token"
    assert "cannot read" in message(error)
    assert "a\\u202eb" in message(error)
    assert "\u202e" not in str(error)


def test_header_set_in_both_maps_is_refused() -> None:
    error = config_error(minimal(headers={"X-Token": "a"}, header_files={"x-token": "/run/token"}))
    assert where(error) == "header_files"
    assert "x-token" in message(error)


def test_header_order_is_kept() -> None:
    headers = {"X-B": "2", "X-A": "1", "X-C": "3"}
    assert parse_config(minimal(headers=headers)).headers == (("X-B", "2"), ("X-A", "1"), ("X-C", "3"))


# -- TLS ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tls",
    [{"ca_file": "/ca.pem"}, {"client_certificate": "/c.pem"}, {"client_certificate": "/c.pem", "client_key": "/k"}],
)
def test_tls_keys_need_https(tls: Dict[str, str]) -> None:
    error = config_error({"endpoint": "http://ma1sd:8090", "tls": tls})
    assert where(error) == "tls"
    assert "https://" in message(error)
    config = parse_config({"endpoint": "https://ma1sd:8090", "tls": tls})
    assert config.tls.ca_file == tls.get("ca_file")
    assert config.tls.client_certificate == tls.get("client_certificate")


def test_tls_with_uppercase_https_scheme() -> None:
    config = parse_config({"endpoint": "HTTPS://ma1sd:8090", "tls": {"ca_file": "/ca.pem"}})
    assert config.tls.ca_file == "/ca.pem"


@pytest.mark.parametrize("endpoint", ["http://ma1sd:8090", "https://ma1sd:8090"])
def test_client_key_needs_client_certificate(endpoint: str) -> None:
    error = config_error({"endpoint": endpoint, "tls": {"client_key": "/k.pem"}})
    assert where(error) == "tls.client_key"
    assert "client_certificate" in message(error)


def test_empty_tls_section_is_fine_with_http() -> None:
    assert parse_config({"endpoint": "http://ma1sd:8090", "tls": {}}).tls.ca_file is None


# -- describe() ---------------------------------------------------------------


def test_describe_hides_header_values(tmp_path: Path) -> None:
    secret_file = tmp_path / "file"
    secret_file.write_text("file-secret\n")
    config = parse_config(
        {
            "endpoint": "https://ma1sd:8090/",
            "headers": {"Authorization": "Bearer top-secret-token", "X-Other": "another-secret"},
            "header_files": {"X-File": str(secret_file)},
        }
    )
    described = config.describe()
    assert described["headers"] == {"Authorization": "<hidden>", "X-Other": "<hidden>"}
    assert "top-secret-token" not in repr(described)
    assert "another-secret" not in repr(described)
    # File names are not secrets; their contents are.
    assert described["header_files"] == {"X-File": str(secret_file)}
    assert "file-secret" not in repr(described)


def test_describe_shows_effective_settings_in_old_layout() -> None:
    described = parse_config(yaml.safe_load(OLD_PROVIDER_BLOCK)).describe()
    assert described["endpoint"] == "http://change.me.example.com:12345"
    assert described["check_credentials_url"] == "http://change.me.example.com:12345" + CHECK_CREDENTIALS_PATH
    assert described["timeout"] == 10.0
    assert described["threepid_login"] == {"enabled": True, "lookup_path": DEFAULT_LOOKUP_PATH}
    assert described["tls"] == {"ca_file": None, "client_certificate": None, "client_key": None}
    policy = yaml.safe_load(OLD_PROVIDER_BLOCK)["policy"]
    assert described["policy"] == policy


def test_describe_round_trips_through_parse() -> None:
    described = parse_config(yaml.safe_load(OLD_PROVIDER_BLOCK)).describe()
    raw = {key: described[key] for key in ("endpoint", "timeout", "threepid_login", "policy")}
    assert parse_config(raw) == parse_config(yaml.safe_load(OLD_PROVIDER_BLOCK))


def described_keys(tree: Dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Yields the dotted keys of a ``describe()`` result (header names left out)."""
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("headers", "header_files"):
            yield from described_keys(value, prefix + key + ".")
        else:
            yield prefix + key


@pytest.mark.parametrize("raw", [{"endpoint": ENDPOINT}, {"endpoint": ENDPOINT, "backend": "rest"}])
def test_describe_shows_each_key_of_the_table_in_its_order(raw: Dict[str, Any]) -> None:
    config = parse_config(raw)
    expected = [key.dotted for key in KEYS if key.backend in (None, config.backend)]
    assert list(described_keys(config.describe())) == expected


def test_a_key_taken_out_of_the_table_is_neither_read_nor_described(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tuple(key for key in KEYS if key.dotted != "policy.all.threepid.replace")
    monkeypatch.setattr(rest_auth_provider.config, "KEYS", kept)
    described = parse_config(minimal()).describe()
    assert described["policy"]["all"]["threepid"] == {"update": True}
    error = config_error(nested(("policy", "all", "threepid", "replace"), True))
    assert where(error) == "policy.all.threepid.replace"
    assert message(error) == UNKNOWN


def test_a_key_added_to_the_table_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    added = Key(("lookup_url",), "url", None, "the lookup URL", derived=True, backend="ma1sd")
    monkeypatch.setattr(rest_auth_provider.config, "KEYS", KEYS + (added,))
    described = parse_config(minimal()).describe()
    assert described["lookup_url"] == "http://ma1sd:8090" + DEFAULT_LOOKUP_PATH
    assert "lookup_url" not in parse_config({"endpoint": ENDPOINT, "backend": "rest"}).describe()
    # A derived key is not one that a config may set.
    assert where(config_error(minimal(lookup_url="/x"))) == "lookup_url"


def test_defaults_of_the_table_are_those_of_the_dataclasses() -> None:
    assert parse_config({"endpoint": ENDPOINT}) == ProviderConfig(endpoint=ENDPOINT)
    assert parse_config({"endpoint": ENDPOINT, "backend": "rest"}) == ProviderConfig(endpoint=ENDPOINT, backend="rest")


def test_describe_is_plain_yaml_data() -> None:
    described = parse_config(minimal(headers={"X-A": "b"})).describe()
    assert yaml.safe_load(yaml.safe_dump(described)) == described


def test_config_is_immutable() -> None:
    config = parse_config({"endpoint": ENDPOINT})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 1.0  # type: ignore[misc]


def _all_paths(value: Any, prefix: Tuple[str, ...] = ()) -> List[Tuple[str, ...]]:
    if isinstance(value, dict):
        paths: List[Tuple[str, ...]] = []
        for key, inner in value.items():
            paths.extend(_all_paths(inner, prefix + (key,)))
        return paths
    return [prefix]


@pytest.mark.parametrize("path", _all_paths(yaml.safe_load(OLD_PROVIDER_BLOCK)["policy"], ("policy",)))
def test_each_policy_key_is_read(path: Tuple[str, ...]) -> None:
    # Flipping one old key changes exactly one field of the parsed policy.
    raw = yaml.safe_load(OLD_PROVIDER_BLOCK)
    inner = raw
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = not inner[path[-1]]
    assert parse_config(raw).policy != parse_config(yaml.safe_load(OLD_PROVIDER_BLOCK)).policy


# -- backend: rest ---------------------------------------------------------------

STORE = "http://iam.internal:8008"


def rest_config(**extra: Any) -> Dict[str, Any]:
    raw: Dict[str, Any] = {"endpoint": STORE, "backend": "rest"}
    raw.update(extra)
    return raw


def test_backend_defaults_to_ma1sd() -> None:
    config = parse_config({"endpoint": ENDPOINT})
    assert config.backend == "ma1sd"
    assert config.rest == RestConfig()
    assert parse_config(minimal(backend="ma1sd")) == config
    assert parse_config(minimal(backend=None)) == config


def test_rest_backend_defaults_are_ma1sds() -> None:
    config = parse_config(rest_config())
    assert config.backend == "rest"
    assert config.rest == RestConfig(auth=DEFAULT_REST_AUTH, identity_single=DEFAULT_REST_IDENTITY_SINGLE)
    assert config.rest_auth_url == "http://iam.internal:8008/_ma1sd/backend/api/v1/auth/login"
    assert config.rest_identity_single_url == "http://iam.internal:8008/_ma1sd/backend/api/v1/identity/single"
    assert config.threepid_login.enabled is True
    # Empty or null sections mean defaults here too.
    assert parse_config(rest_config(rest=None)) == config
    assert parse_config(rest_config(rest={"auth": None, "identity": None})) == config
    assert parse_config(rest_config(rest={"identity": {"single": None}})) == config


@pytest.mark.parametrize("value", ["ldap", "REST", "Ma1sd", "rest ", "synapse", "x\x1b[2J"])
def test_unknown_backend_lists_the_choices(value: str) -> None:
    error = config_error(minimal(backend=value))
    assert where(error) == "backend"
    assert "expected one of ma1sd, rest" in message(error)
    assert "\x1b" not in str(error)


@pytest.mark.parametrize("value", ["", 5, True, ["rest"], {"rest": True}])
def test_backend_must_be_a_string(value: Any) -> None:
    error = config_error(minimal(backend=value))
    assert where(error) == "backend"
    assert "non-empty string" in message(error)


@pytest.mark.parametrize("rest", [{}, {"auth": "/login"}, {"identity": {"single": ""}}, "x", []])
@pytest.mark.parametrize("backend", [None, "ma1sd"])
def test_rest_section_only_with_the_rest_backend(rest: Any, backend: Any) -> None:
    error = config_error(minimal(backend=backend, rest=rest))
    assert where(error) == "rest"
    assert "only read with 'backend: rest'" in message(error)


def test_null_rest_section_is_fine_with_ma1sd() -> None:
    # An emptied ``rest:`` (its keys commented out) is the same as none.
    assert parse_config(minimal(rest=None)) == parse_config({"endpoint": ENDPOINT})


@pytest.mark.parametrize(
    "path",
    [("rest", "auht"), ("rest", "identity", "singel"), ("rest", "identity", "bulk"), ("rest", "host")],
)
def test_unknown_rest_keys_are_named(path: Tuple[str, ...]) -> None:
    raw = nested(path, "/x")
    raw["backend"] = "rest"
    error = config_error(raw)
    assert where(error) == ".".join(path)
    assert message(error).startswith("unknown key")


@pytest.mark.parametrize("path", [("rest",), ("rest", "identity")])
@pytest.mark.parametrize("value", [["/a"], "/a", True, 5])
def test_rest_sections_refuse_non_mappings(path: Tuple[str, ...], value: Any) -> None:
    raw = nested(path, value)
    raw["backend"] = "rest"
    error = config_error(raw)
    assert where(error) == ".".join(path)
    assert "expected a mapping" in message(error)


@pytest.mark.parametrize("path", [("rest", "auth"), ("rest", "identity", "single")])
@pytest.mark.parametrize("value", [5, True, ["/a"], {"a": "/b"}])
def test_rest_locations_must_be_strings(path: Tuple[str, ...], value: Any) -> None:
    raw = nested(path, value)
    raw["backend"] = "rest"
    error = config_error(raw)
    assert where(error) == ".".join(path)
    assert "expected a string" in message(error)


def test_empty_rest_auth_is_refused() -> None:
    error = config_error(rest_config(rest={"auth": ""}))
    assert where(error) == "rest.auth"
    assert "must not be empty" in message(error)
    assert DEFAULT_REST_AUTH in message(error)


def test_empty_identity_single_turns_the_lookup_off() -> None:
    config = parse_config(rest_config(rest={"identity": {"single": ""}}))
    assert config.rest.identity_single == ""
    assert config.rest_identity_single_url is None
    assert config.rest_auth_url == STORE + DEFAULT_REST_AUTH
    # threepid_login.enabled is still read (and the lookup off either way).
    assert config.threepid_login.enabled is True
    assert parse_config(rest_config(threepid_login={"enabled": False})).threepid_login.enabled is False


@pytest.mark.parametrize(
    "endpoint,value,expected",
    [
        ("http://iam:8008", "/login", "http://iam:8008/login"),
        ("http://iam:8008/", "/login", "http://iam:8008/login"),
        ("https://id.example.org/iam", "/_ma1sd/a", "https://id.example.org/iam/_ma1sd/a"),
        ("https://id.example.org/iam/", "/_ma1sd/a", "https://id.example.org/iam/_ma1sd/a"),
        ("http://iam:8008", "http://other:9000/auth", "http://other:9000/auth"),
        ("http://iam:8008", "HTTPS://Other.example/x/", "HTTPS://Other.example/x/"),
        ("http://iam:8008/prefix", "https://other/", "https://other/"),
    ],
)
def test_rest_paths_are_joined_and_urls_used_as_is(endpoint: str, value: str, expected: str) -> None:
    config = parse_config(
        {"endpoint": endpoint, "backend": "rest", "rest": {"auth": value, "identity": {"single": value}}}
    )
    assert config.rest_auth_url == expected
    assert config.rest_identity_single_url == expected


@pytest.mark.parametrize("path", [("rest", "auth"), ("rest", "identity", "single")])
@pytest.mark.parametrize(
    "value,words",
    [
        ("auth/login", "expected a path starting with '/' (joined to 'endpoint') or a full http:// or https:// URL"),
        ("iam:8008/login", "expected a path starting with '/'"),
        ("ftp://iam/login", "expected a path starting with '/'"),
        (" /login", "expected a path starting with '/'"),
        ("/login?x=1", "query or fragment"),
        ("/login#x", "query or fragment"),
        ("/log in", "white space or control characters"),
        ("/login\r\nX-Injected: 1", "white space or control characters"),
        ("/l\u00f6gin", "non-ASCII"),
        ("http://iam:8008/login?x=1", "query or fragment"),
        ("http://iam:8008/login#x", "query or fragment"),
        ("http://iam:8008/log in", "white space or control characters"),
        ("http://iam:8008/\x1b[2J", "white space or control characters"),
        ("http://i\u00e4m:8008/login", "non-ASCII"),
        ("http://:8008/login", "no host"),
        ("http://iam:port/login", "invalid port"),
        ("http://[::1/login", "not a valid URL"),
    ],
)
def test_bad_rest_locations_are_refused(path: Tuple[str, ...], value: str, words: str) -> None:
    raw = nested(path, value)
    raw["backend"] = "rest"
    error = config_error(raw)
    assert where(error) == ".".join(path)
    assert words in message(error)
    assert str(error).isprintable()


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
@pytest.mark.parametrize(
    "template", ["http://svc:{pw}@iam:8008/login", "https://{pw}@iam/x#y", "svc:{pw}@iam:8008/login"]
)
@pytest.mark.parametrize("path", [("rest", "auth"), ("rest", "identity", "single")])
def test_credentials_in_rest_urls_are_never_echoed(path: Tuple[str, ...], template: str, password: str) -> None:
    raw = nested(path, template.format(pw=password))
    raw["backend"] = "rest"
    error = config_error(raw)
    assert where(error) == ".".join(path)
    assert_no_password(str(error), password)
    assert_no_password(repr(error.args), password)


def test_lookup_path_belongs_to_the_ma1sd_backend() -> None:
    error = config_error(rest_config(threepid_login={"lookup_path": DEFAULT_LOOKUP_PATH}))
    assert where(error) == "threepid_login.lookup_path"
    assert "rest.identity.single" in message(error)
    # Only setting it is refused; the rest of the section is read as usual.
    config = parse_config(rest_config(threepid_login={"enabled": False, "lookup_path": None}))
    assert config.threepid_login.enabled is False


def test_backend_is_checked_before_the_rest_section() -> None:
    error = config_error(minimal(backend="ldap", rest={"auth": ""}))
    assert where(error) == "backend"


@pytest.mark.parametrize(
    "rest,ok",
    [
        (None, False),
        ({"auth": "https://iam.internal/login"}, True),
        ({"auth": "https://iam.internal/login", "identity": {"single": ""}}, True),
        ({"identity": {"single": "https://iam.internal/single"}}, True),
        ({"auth": "http://iam.internal/login", "identity": {"single": ""}}, False),
    ],
)
def test_tls_with_rest_needs_one_https_url(rest: Any, ok: bool) -> None:
    raw = rest_config(rest=rest, tls={"ca_file": "/ca.pem"})
    if ok:
        assert parse_config(raw).tls.ca_file == "/ca.pem"
    else:
        error = config_error(raw)
        assert where(error) == "tls"
    https = {"endpoint": "https://iam.internal", "backend": "rest", "tls": {"ca_file": "/ca.pem"}}
    assert parse_config(https).tls.ca_file == "/ca.pem"


def test_describe_rest_backend() -> None:
    config = parse_config(rest_config(rest={"auth": "https://iam.internal/login", "identity": {"single": ""}}))
    described = config.describe()
    assert described["backend"] == "rest"
    assert described["rest"] == {"auth": "https://iam.internal/login", "identity": {"single": ""}}
    assert described["rest_auth_url"] == "https://iam.internal/login"
    assert described["rest_identity_single_url"] is None
    assert described["threepid_login"] == {"enabled": True}
    assert "check_credentials_url" not in described
    assert yaml.safe_load(yaml.safe_dump(described)) == described


def test_describe_ma1sd_backend_names_it_and_has_no_rest_block() -> None:
    described = parse_config({"endpoint": ENDPOINT}).describe()
    assert described["backend"] == "ma1sd"
    assert "rest" not in described
    assert "rest_auth_url" not in described


@pytest.mark.parametrize(
    "raw",
    [
        rest_config(),
        rest_config(rest={"auth": "/a", "identity": {"single": ""}}, threepid_login={"enabled": False}),
        rest_config(rest={"auth": "https://x/a", "identity": {"single": "http://y/b"}}),
    ],
)
def test_describe_rest_round_trips_through_parse(raw: Dict[str, Any]) -> None:
    described = parse_config(raw).describe()
    again = {key: described[key] for key in ("endpoint", "backend", "rest", "timeout", "threepid_login", "policy")}
    assert parse_config(again) == parse_config(raw)


REST_MODULE_BLOCKS = """
modules:
  - module: rest_auth_provider.RestAuthProvider
    config:
      endpoint: "http://iam.internal:8008"
      backend: rest
      rest:
        auth: "/_ma1sd/backend/api/v1/auth/login"
        identity:
          single: "https://iam.internal/_ma1sd/backend/api/v1/identity/single"
password_providers:
  - module: "rest_auth_provider.RestAuthProvider"
    config:
      endpoint: "http://iam.internal:8008"
      backend: "rest"
      rest:
        auth: "/_ma1sd/backend/api/v1/auth/login"
        identity:
          single: "https://iam.internal/_ma1sd/backend/api/v1/identity/single"
"""


def test_rest_backend_in_both_config_styles() -> None:
    data = yaml.safe_load(REST_MODULE_BLOCKS)
    modules = parse_config(data["modules"][0]["config"])
    legacy = parse_config(data["password_providers"][0]["config"])
    assert modules == legacy
    assert modules.rest_identity_single_url == "https://iam.internal/_ma1sd/backend/api/v1/identity/single"
