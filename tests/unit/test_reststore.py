"""RestStoreBackend (``backend: rest``) against the fake REST identity store.

Nothing is mocked: every test goes through the real transport and real
sockets to ``support.fake_reststore``, which answers as netsoc's iamd does.
"""

import json
import logging
from typing import Any, List, Tuple, cast

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.python.failure import Failure

from rest_auth_provider.backends import Backend, make_backend
from rest_auth_provider.backends.ma1sd import Ma1sdBackend
from rest_auth_provider.backends.reststore import RestStoreBackend
from rest_auth_provider.config import parse_config
from rest_auth_provider.response import AuthReply, ThreePid
from rest_auth_provider.transport import BackendError, Transport
from support.fake_ma1sd import FakeMa1sd, Fault
from support.fake_reststore import AUTH_PATH, IDENTITY_SINGLE_PATH, ZERO_REPLY, FakeRestStore
from support.memory_reactor import MemoryClock
from support.twisted_helpers import ensure_deferred, string_transport, take_written
from tests.unit.conftest import NewBackend, Serve

ALICE = "@alice:example.org"
ALICE_PASSWORD = "correct horse battery staple"
BOB = "@bob:example.org"
BOB_PASSWORD = "hunter2"


@pytest.fixture
def store(serve: Serve) -> FakeRestStore:
    server = serve(FakeRestStore(domain="example.org"))
    server.add_user(ALICE, ALICE_PASSWORD, display_name="Alice Liddell", emails=("alice@example.org",))
    server.add_user(BOB, BOB_PASSWORD, msisdns=("447700900123",))
    return server


@pytest.fixture
def backend_kind() -> str:
    """``new_backend`` makes ``backend: rest`` adapters here unless told otherwise."""
    return "rest"


async def check_fails(backend: Backend, user_id: str = ALICE, password: str = ALICE_PASSWORD) -> str:
    """Returns the message of the BackendError that verify_password must raise."""
    with pytest.raises(BackendError) as info:
        await backend.verify_password(user_id, password)
    return str(info.value)


async def lookup_fails(backend: Backend, address: str = "alice@example.org") -> str:
    """Returns the message of the BackendError that lookup_threepid must raise."""
    with pytest.raises(BackendError) as info:
        await backend.lookup_threepid("email", address, "example.org")
    return str(info.value)


# -- the adapter ------------------------------------------------------------------


def test_make_backend_picks_the_adapter() -> None:
    rest = parse_config({"endpoint": "http://iam:8008", "backend": "rest"})
    backend = make_backend(rest, Transport(rest))
    assert isinstance(backend, RestStoreBackend)
    assert (backend.name, backend.kind) == ("the REST store", "rest")
    ma1sd = parse_config({"endpoint": "http://ma1sd:8090"})
    other = make_backend(ma1sd, Transport(ma1sd))
    assert isinstance(other, Ma1sdBackend)
    assert other.kind == "ma1sd"


@pytest.mark.parametrize(
    "raw,enabled",
    [
        ({}, True),
        ({"threepid_login": {"enabled": False}}, False),
        ({"rest": {"identity": {"single": ""}}}, False),
        ({"rest": {"identity": {"single": "https://iam/single"}}}, True),
    ],
)
def test_threepid_lookup_enabled(raw: Any, enabled: bool) -> None:
    config = parse_config(dict(raw, endpoint="http://iam:8008", backend="rest"))
    assert RestStoreBackend(config, Transport(config)).threepid_lookup_enabled is enabled


# -- logins -------------------------------------------------------------------------


@ensure_deferred
async def test_success_gives_the_profile(store: FakeRestStore, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=store.url)
    reply = await backend.verify_password(ALICE, ALICE_PASSWORD)
    assert reply == AuthReply(
        success=True, display_name="Alice Liddell", three_pids=(ThreePid("email", "alice@example.org"),)
    )
    assert await backend.verify_password(BOB, BOB_PASSWORD) == AuthReply(
        success=True, display_name=None, three_pids=(ThreePid("msisdn", "447700900123"),)
    )


@ensure_deferred
async def test_request_is_the_rest_store_protocol(store: FakeRestStore, new_backend: NewBackend) -> None:
    await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD)
    (request,) = store.password_checks()
    assert request["method"] == "POST"
    assert request["path"] == AUTH_PATH
    assert request["headers"]["content-type"] == "application/json"
    assert json.loads(request["body"]) == {
        "auth": {"mxid": ALICE, "localpart": "alice", "domain": "example.org", "password": ALICE_PASSWORD}
    }


@ensure_deferred
async def test_domain_with_a_port_is_sent_whole(new_backend: NewBackend) -> None:
    with FakeRestStore(domain="example.org:8448") as store:
        store.add_user("@alice:example.org:8448", "pw")
        reply = await new_backend(endpoint=store.url).verify_password("@alice:example.org:8448", "pw")
        assert reply.success is True
        assert store.password_checks()[0]["domain"] == "example.org:8448"


@ensure_deferred
async def test_store_user_names_with_capitals_are_found(store: FakeRestStore, new_backend: NewBackend) -> None:
    # iamd answers its user name lowercased; we always send the canonical, lowercased ID.
    store.add_user("@Carol:example.org", "pw")
    assert (await new_backend(endpoint=store.url).verify_password("@carol:example.org", "pw")).success is True


@pytest.mark.parametrize(
    "store_id",
    [
        {"type": "localpart", "value": "alice"},
        {"type": "localpart", "value": "ALICE"},
        {"type": "localpart", "value": "Alice"},
        {"type": "LocalPart", "value": "alice"},
        {"type": "mxid", "value": ALICE},
        {"type": "mxid", "value": "@ALICE:Example.ORG"},
        {"type": "MXID", "value": ALICE},
    ],
)
@ensure_deferred
async def test_id_naming_the_user_grants_the_login(
    store: FakeRestStore, new_backend: NewBackend, store_id: Any
) -> None:
    store.id_override[ALICE] = store_id
    assert (await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD)).success is True


@ensure_deferred
async def test_mxid_ids(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.id_type = "mxid"
    assert (await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD)).success is True


@pytest.mark.parametrize(
    "store_id,words",
    [
        ({"type": "localpart", "value": "bob"}, "answered for @bob:example.org, not @alice:example.org"),
        ({"type": "localpart", "value": "alice2"}, "answered for @alice2:example.org, not @alice:example.org"),
        ({"type": "localpart", "value": ""}, "answered for @:example.org, not @alice:example.org"),
        ({"type": "mxid", "value": BOB}, "answered for @bob:example.org, not @alice:example.org"),
        ({"type": "mxid", "value": "@alice:evil.example"}, "answered for @alice:evil.example, not @alice:example.org"),
        ({"type": "mxid", "value": "alice"}, "answered for alice, not @alice:example.org"),
        # The Kelvin sign lowercases to "k"; only ASCII letters are folded.
        ({"type": "mxid", "value": "@\u212aate:example.org"}, "answered for @\u212aate:example.org, not"),
        ({"type": "localpart", "value": "bob\x1b[2J"}, "answered for @bob\\x1b[2J:example.org, not @alice:example.org"),
        ({"type": "email", "value": "alice@example.org"}, "unknown type 'email' ('alice@example.org'), not @alice"),
        ({"type": "", "value": ""}, "unknown type '' (''), not @alice:example.org"),
        (None, "answered success without an 'id' (expected @alice:example.org)"),
        ("alice", "'auth.id' is a string, not an object"),
        ({"type": "localpart"}, "'auth.id' needs string 'type' and 'value'"),
    ],
)
@ensure_deferred
async def test_id_naming_anyone_else_is_a_backend_error(
    store: FakeRestStore, new_backend: NewBackend, store_id: Any, words: str
) -> None:
    store.id_override[ALICE] = store_id
    message = await check_fails(new_backend(endpoint=store.url))
    assert words in message
    assert message.isprintable()


@ensure_deferred
async def test_kelvin_sign_does_not_pass_for_k(new_backend: NewBackend) -> None:
    with FakeRestStore() as store:
        store.add_user("@kate:example.org", "pw")
        store.id_override["@kate:example.org"] = {"type": "localpart", "value": "\u212aate"}
        assert "answered for @\u212aate:example.org, not @kate:example.org" in await check_fails(
            new_backend(endpoint=store.url), "@kate:example.org", "pw"
        )


@pytest.mark.parametrize("user_id,password", [(ALICE, "wrong"), ("@nobody:example.org", "pw")])
@ensure_deferred
async def test_401_and_404_refuse_the_credentials(
    store: FakeRestStore, new_backend: NewBackend, user_id: str, password: str
) -> None:
    assert await new_backend(endpoint=store.url).verify_password(user_id, password) == AuthReply(success=False)
    assert len(store.password_checks()) == 1


@ensure_deferred
async def test_disabled_account_is_refused(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.users[ALICE].enabled = False
    assert await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD) == AuthReply(success=False)


@pytest.mark.parametrize("status", [200, 401, 404])
@pytest.mark.parametrize(
    "body", [ZERO_REPLY, {"auth": {"success": False}}, {"auth": {"success": False, "id": {"type": "mxid"}}}]
)
@ensure_deferred
async def test_refusal_bodies(store: FakeRestStore, new_backend: NewBackend, status: int, body: Any) -> None:
    store.fault = Fault("status", status=status, body=json.dumps(body).encode())
    assert await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD) == AuthReply(success=False)


@pytest.mark.parametrize("status", [401, 404])
@pytest.mark.parametrize(
    "body",
    [
        b'{"errcode":"M_UNAUTHORIZED","error":"missing or wrong credentials"}',
        b"<html>401 Authorization Required</html>",
        b"",
        b'{"auth": {"success": true, "id": {"type": "localpart", "value": "alice"}}}',
        b'{"auth": {"success": false, "success": true}}',
        b'{"auth": {}}',
        b"[]",
    ],
)
@ensure_deferred
async def test_401_or_404_without_a_refusal_body_is_a_backend_error(
    store: FakeRestStore, new_backend: NewBackend, status: int, body: bytes
) -> None:
    store.fault = Fault("status", status=status, body=body)
    assert await check_fails(new_backend(endpoint=store.url)) == "HTTP %d" % status


@ensure_deferred
async def test_authenticating_proxy_401_is_a_backend_error(new_backend: NewBackend) -> None:
    with FakeRestStore(required_headers={"Authorization": "Bearer s3cret"}) as store:
        store.add_user(ALICE, ALICE_PASSWORD)
        assert await check_fails(new_backend(endpoint=store.url)) == "HTTP 401"
        backend = new_backend(endpoint=store.url, headers={"Authorization": "Bearer s3cret"})
        assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True


@ensure_deferred
async def test_wrong_path_404_is_a_backend_error(store: FakeRestStore, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=store.url, rest={"auth": "/_ma1sd/backend/api/v1/auth/logn"})
    assert await check_fails(backend) == "HTTP 404"


@ensure_deferred
async def test_400_says_the_store_refused_the_request(new_backend: NewBackend) -> None:
    with FakeRestStore(domain="matrix.example.org") as store:
        store.add_user(ALICE, ALICE_PASSWORD)
        message = await check_fails(new_backend(endpoint=store.url))
    assert message.startswith("HTTP 400: the store refused the request itself")
    assert "its domain may not be example.org (Synapse's server_name" in message
    assert ALICE_PASSWORD not in message


@ensure_deferred
async def test_400_names_the_domain_escaped(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.fault = Fault("status", status=400, body=json.dumps(ZERO_REPLY).encode())
    message = await check_fails(new_backend(endpoint=store.url), "@alice:evil\x1b[2J.example", "pw")
    assert "evil\\x1b[2J.example" in message
    assert message.isprintable()


@pytest.mark.parametrize(
    "fault,words",
    [
        (Fault("success_missing"), "'auth.success' is null, not a boolean"),
        (Fault("body", body=b'{"auth": {"success": "true", "id": {"type": "mxid", "value": "@alice:example.org"}}}'),
         "'auth.success' is a string"),
        (Fault("body", body=b'{"auth": {"success": false, "success": true}}'), "duplicate key 'success'"),
        (Fault("body", body=b'{"auth": {"success": true, "id": {"type": "mxid", "value": "@alice:example.org"},'
                            b' "id": {"type": "mxid", "value": "@bob:example.org"}}}'), "duplicate key 'id'"),
        (Fault("body", body=b"not json"), "not JSON"),
        (Fault("body", body=b'{"auth": {"success": true, "profile": {"three_pids": "x"}, "id": {}}}'),
         "'auth.profile.three_pids' is a string"),
        (Fault("status", status=500, body=b'{"errcode": "M_UNKNOWN"}'), "HTTP 500"),
        (Fault("status", status=503, body=b""), "HTTP 503"),
        (Fault("status", status=403, body=json.dumps(ZERO_REPLY).encode()), "HTTP 403"),
        (Fault("redirect", status=302), "HTTP 302 redirect"),
        (Fault("huge", size=100_000), "reply too large"),
        (Fault("close"), "connection closed"),
    ],
)  # fmt: skip
@ensure_deferred
async def test_unusable_replies_are_backend_errors(
    store: FakeRestStore, new_backend: NewBackend, fault: Fault, words: str
) -> None:
    store.fault = fault
    assert words in await check_fails(new_backend(endpoint=store.url))


@ensure_deferred
async def test_2xx_refusal_is_a_refusal(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.fault = Fault("body", body=b'{"auth": {"success": false, "id": {"type": "localpart", "value": "bob"}}}')
    assert await new_backend(endpoint=store.url).verify_password(ALICE, ALICE_PASSWORD) == AuthReply(success=False)


class MemoryStore:
    """A backend on Twisted's MemoryReactorClock: the test reads the request
    the adapter wrote and answers it with raw bytes, on the memory clock."""

    def __init__(self, **raw: Any):
        self.reactor = MemoryClock()
        config = parse_config(dict(raw, endpoint="http://127.0.0.1:8008", backend="rest"))
        self.backend = RestStoreBackend(config, Transport(config, reactor=cast(IReactorTime, self.reactor)))
        self.wire = string_transport()

    def call(self, result: "defer.Deferred[Any]") -> List[Any]:
        """Returns a list that gets the call's outcome (a value or a Failure)."""
        outcome: List[Any] = []
        result.addBoth(outcome.append)
        self.reactor.advance(0)
        return outcome

    def connect(self) -> bytes:
        """Accepts the connection the transport asked for; returns the request bytes."""
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(cast(IAddress, IPv4Address("TCP", host, port)))
        assert protocol is not None
        self.protocol = protocol
        self.protocol.makeConnection(cast(ITransport, self.wire))
        for _ in range(3):  # the body is written by the reactor's cooperator
            self.reactor.advance(0)
        return take_written(self.wire)

    def answer(self, status: int, body: bytes) -> None:
        head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        self.protocol.dataReceived(head + body)
        self.reactor.advance(0)


def test_memory_reactor_401_is_a_refusal() -> None:
    memory = MemoryStore()
    outcome = memory.call(defer.ensureDeferred(memory.backend.verify_password(ALICE, ALICE_PASSWORD)))
    request = memory.connect()
    assert request.startswith(b"POST /_ma1sd/backend/api/v1/auth/login HTTP/1.1\r\n")
    assert json.loads(request.split(b"\r\n\r\n", 1)[1])["auth"]["localpart"] == "alice"
    assert outcome == []
    memory.answer(401, json.dumps(ZERO_REPLY).encode())
    assert outcome == [AuthReply(success=False)]


def test_memory_reactor_lookup_hit() -> None:
    memory = MemoryStore()
    outcome = memory.call(defer.ensureDeferred(memory.backend.lookup_threepid("email", "a@b.c", "example.org")))
    request = memory.connect()
    assert request.startswith(b"POST /_ma1sd/backend/api/v1/identity/single HTTP/1.1\r\n")
    memory.answer(
        200, b'{"lookup": {"medium": "email", "address": "a@b.c", "id": {"type": "localpart", "value": "A"}}}'
    )
    assert outcome == ["@a:example.org"]


def test_memory_reactor_timeout_is_a_backend_error() -> None:
    memory = MemoryStore(timeout=5)
    outcome = memory.call(defer.ensureDeferred(memory.backend.verify_password(ALICE, ALICE_PASSWORD)))
    memory.connect()
    memory.reactor.advance(4.9)
    assert outcome == []
    memory.reactor.advance(0.2)
    (failure,) = outcome
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, BackendError)
    assert str(failure.value) == "no complete answer within 5 s"


@ensure_deferred
async def test_password_is_never_logged(
    store: FakeRestStore, new_backend: NewBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = new_backend(endpoint=store.url)
    await backend.verify_password(ALICE, ALICE_PASSWORD)
    store.fault = Fault("status", status=400)
    await check_fails(backend)
    assert caplog.records
    assert ALICE_PASSWORD not in caplog.text


# -- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
@ensure_deferred
async def test_paths_are_joined_to_the_endpoint(new_backend: NewBackend, suffix: str) -> None:
    with FakeRestStore(base_path="/iam/_ma1sd/backend/api/v1") as store:
        store.add_user(ALICE, ALICE_PASSWORD, emails=("alice@example.org",))
        backend = new_backend(endpoint=store.url + "/iam" + suffix)
        assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
        assert await backend.lookup_threepid("email", "alice@example.org", "example.org") == ALICE
        assert [r["path"] for r in store.requests] == [
            "/iam/_ma1sd/backend/api/v1/auth/login",
            "/iam/_ma1sd/backend/api/v1/identity/single",
        ]


@ensure_deferred
async def test_custom_paths(new_backend: NewBackend) -> None:
    with FakeRestStore(base_path="/api") as store:
        store.add_user(ALICE, ALICE_PASSWORD, emails=("alice@example.org",))
        backend = new_backend(
            endpoint=store.url, rest={"auth": "/api/auth/login", "identity": {"single": "/api/identity/single"}}
        )
        assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
        assert await backend.lookup_threepid("email", "alice@example.org", "example.org") == ALICE


@ensure_deferred
async def test_full_urls_are_used_as_is(store: FakeRestStore, new_backend: NewBackend) -> None:
    # The endpoint answers nothing (port 9, discard): only the full URLs are asked.
    backend = new_backend(
        endpoint="http://127.0.0.1:9",
        rest={"auth": store.url + AUTH_PATH, "identity": {"single": store.url + IDENTITY_SINGLE_PATH}},
    )
    assert (await backend.verify_password(ALICE, ALICE_PASSWORD)).success is True
    assert await backend.lookup_threepid("email", "alice@example.org", "example.org") == ALICE
    assert len(store.password_checks()) == len(store.lookups()) == 1


# -- 3PID lookups --------------------------------------------------------------------


@ensure_deferred
async def test_lookup_hit_localpart(store: FakeRestStore, new_backend: NewBackend) -> None:
    backend = new_backend(endpoint=store.url)
    assert await backend.lookup_threepid("email", "alice@example.org", "example.org") == ALICE
    assert await backend.lookup_threepid("msisdn", "447700900123", "example.org") == BOB
    (request, _) = store.lookups()
    assert request["method"] == "POST"
    assert request["path"] == IDENTITY_SINGLE_PATH
    assert json.loads(request["body"]) == {"lookup": {"medium": "email", "address": "alice@example.org"}}


@ensure_deferred
async def test_lookup_localpart_is_lowercased_onto_our_server(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.id_override[ALICE] = {"type": "localpart", "value": "Alice"}
    backend = new_backend(endpoint=store.url)
    assert await backend.lookup_threepid("email", "alice@example.org", "matrix.example.org") == (
        "@alice:matrix.example.org"
    )


@pytest.mark.parametrize("value", ["@alice:example.org", "@alice:evil.example", "@Alice:Example.org"])
@ensure_deferred
async def test_lookup_hit_mxid_is_returned_as_sent(store: FakeRestStore, new_backend: NewBackend, value: str) -> None:
    # The provider refuses IDs of other servers; the adapter reports what the store said.
    store.id_override[ALICE] = {"type": "mxid", "value": value}
    assert await new_backend(endpoint=store.url).lookup_threepid("email", "alice@example.org", "example.org") == value


@ensure_deferred
async def test_lookup_with_mxid_ids(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.id_type = "mxid"
    assert await new_backend(endpoint=store.url).lookup_threepid("email", "alice@example.org", "example.org") == ALICE


@pytest.mark.parametrize("fault", [Fault("status", status=404, body=b"{}"), Fault("body", body=b"{}")])
@ensure_deferred
async def test_lookup_miss(store: FakeRestStore, new_backend: NewBackend, fault: Fault) -> None:
    backend = new_backend(endpoint=store.url)
    assert await backend.lookup_threepid("email", "nobody@example.org", "example.org") is None
    store.fault = fault
    assert await backend.lookup_threepid("email", "alice@example.org", "example.org") is None


@pytest.mark.parametrize(
    "fault,words",
    [
        (Fault("body", body=b'{"mxid": "@alice:example.org"}'), "neither {} nor has a 'lookup' object"),
        (Fault("body", body=b'{"lookup": {"medium": "email", "address": "a@b.c"}}'), "'lookup' has no 'id'"),
        (Fault("body", body=b'{"lookup": {"id": {"type": "email", "value": "a@b.c"}}}'), "unknown type 'email'"),
        (Fault("body", body=b'{"lookup": {"id": {"type": "localpart", "value": ""}}}'), "not a localpart: ''"),
        (Fault("body", body=b'{"lookup": {"id": {"type": "localpart", "value": "a:evil"}}}'), "not a localpart"),
        (Fault("body", body=b'{"lookup": {}, "lookup": {}}'), "duplicate key 'lookup'"),
        (Fault("body", body=b"[]"), "lookup reply is a list"),
        (Fault("status", status=500, body=b"{}"), "HTTP 500"),
        (Fault("status", status=401, body=b"{}"), "HTTP 401"),
        (Fault("status", status=400, body=b"{}"), "HTTP 400"),
        (Fault("redirect", status=307), "HTTP 307 redirect"),
    ],
)
@ensure_deferred
async def test_unusable_lookup_replies_are_backend_errors(
    store: FakeRestStore, new_backend: NewBackend, fault: Fault, words: str
) -> None:
    store.fault = fault
    assert words in await lookup_fails(new_backend(endpoint=store.url))


@ensure_deferred
async def test_lookup_id_missing_is_a_backend_error(store: FakeRestStore, new_backend: NewBackend) -> None:
    store.id_override[ALICE] = None
    assert "'lookup' has no 'id'" in await lookup_fails(new_backend(endpoint=store.url))


@pytest.mark.parametrize("raw", [{"threepid_login": {"enabled": False}}, {"rest": {"identity": {"single": ""}}}])
@ensure_deferred
async def test_lookup_off_asks_nothing(store: FakeRestStore, new_backend: NewBackend, raw: Any) -> None:
    backend = new_backend(endpoint=store.url, **raw)
    assert backend.threepid_lookup_enabled is False
    assert await backend.lookup_threepid("email", "alice@example.org", "example.org") is None
    assert store.requests == []


# -- both fakes, one protocol-agnostic scenario ----------------------------------------


@pytest.mark.parametrize("fake_class,backend", [(FakeMa1sd, "ma1sd"), (FakeRestStore, "rest")])
@ensure_deferred
async def test_either_backend_against_its_fake(new_backend: NewBackend, fake_class: Any, backend: str) -> None:
    with fake_class() as fake:
        fake.add_user(ALICE, ALICE_PASSWORD, display_name="Alice", emails=("alice@example.org",))
        adapter = new_backend(endpoint=fake.url, backend=backend)
        assert adapter.kind == backend
        assert await adapter.verify_password(ALICE, ALICE_PASSWORD) == AuthReply(
            success=True, display_name="Alice", three_pids=(ThreePid("email", "alice@example.org"),)
        )
        assert (await adapter.verify_password(ALICE, "wrong")).success is False
        assert await adapter.lookup_threepid("email", "alice@example.org", "example.org") == ALICE
        assert await adapter.lookup_threepid("email", "nobody@example.org", "example.org") is None
        checks: List[Tuple[str, str]] = [(c["user_id"], c["password"]) for c in fake.password_checks()]
        assert checks == [(ALICE, ALICE_PASSWORD), (ALICE, "wrong")]
        assert [(r["medium"], r["address"]) for r in fake.lookups()] == [
            ("email", "alice@example.org"),
            ("email", "nobody@example.org"),
        ]
        fake.fault = Fault("success_missing")
        with pytest.raises(BackendError, match="'auth.success' is null"):
            await adapter.verify_password(ALICE, ALICE_PASSWORD)
