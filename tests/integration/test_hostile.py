"""Hostile backends and hostile clients, through a real Synapse.

For every backend fault: the client gets 403 within the timeout plus 1 s, no
account is created, an existing account's profile does not change, exactly one
WARNING names the cause, and Synapse keeps answering other requests meanwhile.
For bad client input: a clean 4xx, never a 500, and the backend is never asked.

The cases are listed in FAULTS (every backend), REST_FAULTS (what only a REST
identity store can answer; run by test_hostile_rest.py with RAP_BACKEND=rest)
and BAD_INPUTS;
docs/reliability.md has one row per case and tests/unit/test_docs.py checks
that the two agree. Runs in the tox environments that set RAP_HOSTILE=1
(oldest, a middle and the newest release), with each backend.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from support.certs import write_certs
from support.fake_ma1sd import FakeMa1sd, FakeUser, Fault
from support.fake_reststore import ZERO_REPLY
from support.harness import SynapseServer, module_block, supports_modules_style
from support.matrix_client import MatrixClient
from tests.integration.conftest import (
    TIMEOUT,
    Homeserver,
    check_started,
    new_fake,
    new_password,
    with_backend,
)

# name -> (fault, words the WARNING must contain)
FAULTS: Dict[str, Tuple[Fault, str]] = {
    "connection refused": (Fault("down"), "connection refused"),
    "no answer (hangs past the timeout)": (Fault("hang"), "no complete answer within 3 s"),
    "body trickles in slower than the timeout": (Fault("trickle", seconds=0.5), "no complete answer within 3 s"),
    "closes the connection without a reply": (Fault("close"), "connection closed before a reply"),
    "body cut off mid-way": (Fault("cutoff"), "connection closed before the reply was complete"),
    "redirect 302 elsewhere": (Fault("redirect", status=302), "HTTP 302 redirect"),
    "redirect 307 elsewhere": (Fault("redirect", status=307), "HTTP 307 redirect"),
    "HTTP 400 M_JSON_MISSING_KEYS": (
        Fault("status", status=400, body=b'{"errcode":"M_JSON_MISSING_KEYS"}'),
        "HTTP 400",
    ),
    "HTTP 401": (Fault("status", status=401, body=b"{}"), "HTTP 401"),
    "HTTP 404": (Fault("status", status=404, body=b"Not Found"), "HTTP 404"),
    "HTTP 500 M_UNKNOWN": (Fault("status", status=500, body=b'{"errcode":"M_UNKNOWN"}'), "HTTP 500"),
    "HTTP 502 from a proxy (HTML)": (Fault("status", status=502, body=b"<html>Bad Gateway</html>"), "HTTP 502"),
    "HTTP 503": (Fault("status", status=503, body=b""), "HTTP 503"),
    "200 with an HTML page": (Fault("body", body=b"<html><body>Login</body></html>"), "reply is not JSON"),
    "200 with an empty body": (Fault("body", body=b""), "reply is not JSON"),
    "200 with invalid UTF-8": (Fault("body", body=b'{"auth": "\xff\xfe"}'), "reply is not UTF-8"),
    "reply is a JSON list": (Fault("body", body=b"[]"), "reply is a list"),
    "reply is a JSON string": (Fault("body", body=b'"yes"'), "reply is a string"),
    "reply is JSON null": (Fault("body", body=b"null"), "reply is null"),
    "no 'auth' key": (Fault("body", body=b'{"success": true}'), "'auth' is null"),
    "'auth' is a list": (Fault("body", body=b'{"auth": [true]}'), "'auth' is a list"),
    "'auth.success' missing": (Fault("body", body=b'{"auth": {}}'), "'auth.success' is null"),
    "'auth.success' is the string \"true\"": (Fault("body", body=b'{"auth": {"success": "true"}}'), "is a string"),
    "'auth.success' is the number 1": (Fault("body", body=b'{"auth": {"success": 1}}'), "is a number"),
    "'auth.success' is null": (Fault("body", body=b'{"auth": {"success": null}}'), "is null"),
    "'auth.profile' is a string": (
        Fault("body", body=b'{"auth": {"success": true, "profile": "x"}}'),
        "'auth.profile' is a string",
    ),
    "'display_name' is a number": (
        Fault("body", body=b'{"auth": {"success": true, "profile": {"display_name": 5}}}'),
        "'auth.profile.display_name' is a number",
    ),
    "'three_pids' is an object": (
        Fault("body", body=b'{"auth": {"success": true, "profile": {"three_pids": {}}}}'),
        "'auth.profile.three_pids' is an object",
    ),
    "a 3PID entry without 'address'": (
        Fault("body", body=b'{"auth": {"success": true, "profile": {"three_pids": [{"medium": "email"}]}}}'),
        "needs string 'medium' and 'address'",
    ),
    "NaN in the JSON": (Fault("body", body=b'{"auth": {"success": NaN}}'), "reply is not JSON"),
    "duplicate success key": (
        Fault("body", body=b'{"auth": {"success": false, "success": true}}'),
        "duplicate key",
    ),
    "huge body (1 MiB)": (Fault("huge", size=1024 * 1024), "reply too large"),
}


@dataclass
class RestCase:
    """A REST store's answer that must refuse the login: ``cause`` is in the
    WARNING (and in docs/reliability.md), ``detail`` too, with ``{user_id}``
    standing for the user logging in."""

    cause: str
    fault: Fault = field(default_factory=Fault)
    #: The store's own domain, when it is not Synapse's server_name.
    domain: Optional[str] = None
    #: The ``id`` the store answers for the user logging in ("no id": none at all).
    store_id: Any = "as usual"
    detail: str = ""


# name -> what the store does; only with RAP_BACKEND=rest.
REST_FAULTS: Dict[str, RestCase] = {
    "HTTP 400: the store serves another domain": RestCase(
        "the store refused the request itself; its domain may not be example.org", domain="other.example"
    ),
    "HTTP 401 without a JSON body (an authenticating proxy)": RestCase(
        "HTTP 401", Fault("status", status=401, body=b"<html><body>401 Authorization Required</body></html>")
    ),
    "HTTP 401 whose body says success": RestCase(
        "HTTP 401",
        Fault("status", status=401, body=b'{"auth": {"success": true, "id": {"type": "localpart", "value": "x"}}}'),
    ),
    "HTTP 404 with an HTML page (a wrong path)": RestCase(
        "HTTP 404", Fault("status", status=404, body=b"<html><body>404 page not found</body></html>")
    ),
    "HTTP 403 with a refusal body": RestCase(
        "HTTP 403", Fault("status", status=403, body=json.dumps(ZERO_REPLY).encode())
    ),
    "'id' names another user": RestCase(
        "answered for @mallory:example.org, not",
        store_id={"type": "localpart", "value": "mallory"},
        detail="not {user_id}",
    ),
    "'id' is a user of another server": RestCase(
        "answered for @mallory:other.example, not",
        store_id={"type": "mxid", "value": "@mallory:other.example"},
        detail="not {user_id}",
    ),
    "'id' of an unknown type": RestCase(
        "answered success for an 'id' of unknown type 'email'",
        store_id={"type": "email", "value": "mallory@example.org"},
        detail="not {user_id}",
    ),
    "'id' is a string": RestCase("'auth.id' is a string", store_id="mallory"),
    "success without an 'id'": RestCase(
        "answered success without an 'id'", store_id="no id", detail="(expected {user_id})"
    ),
    "reply without 'success'": RestCase("'auth.success' is null", Fault("success_missing")),
}


# name -> login request body (password filled in where "PW" stands)
BAD_INPUTS: Dict[str, Dict[str, Any]] = {
    "localpart with invalid characters": {"type": "m.login.password", "user": "al ice#1", "password": "PW"},
    "very long user ID (300 characters)": {"type": "m.login.password", "user": "a" * 300, "password": "PW"},
    "non-ASCII localpart": {"type": "m.login.password", "user": "\u00e4lice", "password": "PW"},
    "empty password": {"type": "m.login.password", "user": "USER", "password": ""},
    "user ID on another server": {"type": "m.login.password", "user": "@USER:other.example", "password": "PW"},
    "'user:domain' without '@'": {"type": "m.login.password", "user": "USER:example.org", "password": "PW"},
    "'@user' without a server name": {"type": "m.login.password", "user": "@USER", "password": "PW"},
    "missing password": {"type": "m.login.password", "user": "USER"},
    "password is a number": {"type": "m.login.password", "user": "USER", "password": 12345},
    "missing user": {"type": "m.login.password", "password": "PW"},
    "identifier is a string": {"type": "m.login.password", "identifier": "USER", "password": "PW"},
    "unknown identifier type": {"type": "m.login.password", "identifier": {"type": "m.id.x"}, "password": "PW"},
    "email identifier without address": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email"},
        "password": "PW",
    },
    "3PID of an unknown medium": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "carrier-pigeon", "address": "x"},
        "password": "PW",
    },
}


def apply_fault(ma1sd: FakeMa1sd, fault: Fault) -> None:
    if fault.kind == "down":
        ma1sd.stop()
    else:
        ma1sd.fault = fault


class FailClosed:
    """One hostile case: a newcomer and a user who logged in before it."""

    def __init__(self, hs: Homeserver):
        self.hs = hs
        self.newcomer = hs.new_user("fresh", display_name="Fresh")
        self.existing = hs.new_user(
            "known", display_name="Known Before", emails=("known.%s@example.org" % new_password()[-6:],)
        )
        self.token = hs.client.login_ok(self.existing.user_id, self.existing.password)["access_token"]
        self.pids_before = hs.client.threepid_set(self.token)
        self.existing.display_name = "Known After"
        self.existing.three_pids = []

    @property
    def users(self) -> List[FakeUser]:
        return [self.newcomer, self.existing]

    def check(self, case: str, cause: str, detail: str = "") -> List[str]:
        """Logs both users in and checks the outcome; returns the module's
        log lines. Call once the fault is in place."""
        hs = self.hs
        mark = hs.mark()
        for user in self.users:
            status, seconds, probes = hs.login_while_probing(user.user_id, user.password)
            assert status == 403, (case, user.user_id)
            assert seconds <= TIMEOUT + 1.0, (case, seconds)
            assert max(probes) < 1.0, (case, probes)
        warnings = hs.module_warnings(mark)
        assert len(warnings) == 2 and all(cause in w for w in warnings), (case, warnings)
        for user in self.users:
            mine = [w for w in warnings if "Login refused for %s:" % user.user_id in w]
            assert len(mine) == 1 and detail.format(user_id=user.user_id) in mine[0], (case, user.user_id, warnings)
        assert hs.client.profile(self.newcomer.user_id).status_code == 404
        assert hs.client.displayname(self.existing.user_id) == "Known Before"
        assert hs.client.threepid_set(self.token) == self.pids_before
        return [line for line in hs.new_log_lines(mark) if " - rest_auth_provider" in line]


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_backend_fault_fails_closed(case: str, sync_hs: Homeserver) -> None:
    fault, cause = FAULTS[case]
    setup = FailClosed(sync_hs)
    apply_fault(sync_hs.ma1sd, fault)
    setup.check(case, cause)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_client_input_is_a_clean_4xx_without_asking_the_backend(case: str, hs: Homeserver) -> None:
    user = hs.new_user("input")
    localpart = user.user_id[1:].split(":")[0]

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, str):
            return value.replace("USER", localpart).replace("PW", user.password)
        return value

    r = hs.client.login(body=fill(BAD_INPUTS[case]))
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert "errcode" in r.json()
    assert hs.ma1sd.requests == []


def test_interrupted_sync_is_completed_by_the_next_login(sync_hs: Homeserver) -> None:
    hs = sync_hs
    user = hs.new_user("resume", display_name="Resume", emails=("a.resume@example.org", "b.resume@example.org"))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    user.three_pids = [
        {"medium": "email", "address": "a.resume@example.org"},
        {"medium": "email", "address": "c.resume@example.org"},
    ]
    hs.ma1sd.fault = Fault("hang")
    assert hs.client.login(user.user_id, user.password).status_code == 403
    assert hs.client.threepid_set(token) == {("email", "a.resume@example.org"), ("email", "b.resume@example.org")}
    hs.ma1sd.reset()
    hs.client.login_ok(user.user_id, user.password)
    assert hs.client.threepid_set(token) == {("email", "a.resume@example.org"), ("email", "c.resume@example.org")}


def test_racing_3pid_syncs_lose_and_duplicate_nothing(sync_hs: Homeserver) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hs = sync_hs
    user = hs.new_user("pidrace", emails=("one.race@example.org",))
    token = hs.client.login_ok(user.user_id, user.password)["access_token"]
    user.three_pids = [
        {"medium": "email", "address": "two.race@example.org"},
        {"medium": "msisdn", "address": "+1 555 0199"},
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: hs.client.login(user.user_id, user.password).status_code, range(8)))
    assert statuses == [200] * 8
    pids = hs.client.threepids(token)
    assert sorted((p["medium"], p["address"]) for p in pids) == [
        ("email", "two.race@example.org"),
        ("msisdn", "15550199"),
    ]


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: Any) -> Iterator[Tuple[Homeserver, FakeMa1sd, Any]]:
    certs = write_certs(str(tmp_path_factory.mktemp("certs")))
    fake = new_fake(tls=certs.server).start()
    style = "modules" if supports_modules_style() else "password_providers"
    config = with_backend(
        {"endpoint": "https://127.0.0.1:%d" % fake.port, "timeout": TIMEOUT, "tls": {"ca_file": certs.ca_cert}}
    )
    server = SynapseServer(Path(tmp_path_factory.mktemp("tls")), module_block(style, config), name="tls")
    try:
        server.start()
        check_started(server)
        yield Homeserver(server, MatrixClient(server.url), style, config, fake), fake, certs
    finally:
        server.stop()
        fake.stop()


def test_tls_endpoint_with_its_ca_configured_is_accepted(tls_setup: Any) -> None:
    hs, fake, _ = tls_setup
    user = hs.new_user("tls", display_name="TLS")
    assert hs.client.login_ok(user.user_id, user.password)["user_id"] == user.user_id


def test_tls_self_signed_certificate_is_refused(tls_setup: Any) -> None:
    hs, fake, certs = tls_setup
    user = hs.new_user("tlsbad")
    port = fake.port
    fake.stop()
    bad = new_fake(tls=certs.self_signed).start(port=port)
    bad.users = fake.users
    try:
        mark = hs.mark()
        assert hs.client.login(user.user_id, user.password).status_code == 403
        warnings = hs.module_warnings(mark)
        assert len(warnings) == 1 and "TLS handshake failed" in warnings[0], warnings
        assert bad.requests == []
        assert hs.client.profile(user.user_id).status_code == 404
    finally:
        bad.stop()
        fake.start(port=port)
