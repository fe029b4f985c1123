"""Ma1sdClient against the real threaded fake ma1sd on a loopback port.

Nothing in the client is mocked: every test goes through Twisted's Agent,
real sockets (and real TLS where it says so) to ``tests.fake_ma1sd``.
"""

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Set, Tuple

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, VerifyError
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from rest_auth_provider.client import BackendError, Ma1sdClient, _retryable
from rest_auth_provider.config import CHECK_CREDENTIALS_PATH, DEFAULT_LOOKUP_PATH, parse_config
from rest_auth_provider.response import AuthReply, ThreePid
from tests.fake_ma1sd import FakeMa1sd, Fault
from tests.unit.certs import CertPaths, write_certs

ALICE = "@alice:example.com"
ALICE_PASSWORD = "correct horse battery staple"
BOB = "@bob:example.com"
BOB_PASSWORD = "hunter2"

ClientFactory = Callable[..., Ma1sdClient]


def _add_users(fake: FakeMa1sd) -> None:
    fake.add_user(
        ALICE,
        ALICE_PASSWORD,
        display_name="Alice Liddell",
        emails=("Alice@Example.com",),
        msisdns=("+44 20 7946 0000",),
    )
    fake.add_user(BOB, BOB_PASSWORD)


@pytest.fixture
def fake() -> Iterator[FakeMa1sd]:
    server = FakeMa1sd().start()
    _add_users(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_certs(str(tmp_path_factory.mktemp("certs")))


@pytest_twisted.async_yield_fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Returns a factory: ``make_client(endpoint=..., **other_config_keys)``; closes every client after the test."""
    clients: List[Ma1sdClient] = []

    def factory(**raw: Any) -> Ma1sdClient:
        client = Ma1sdClient(parse_config(raw))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


async def _check_fails(client: Ma1sdClient, user_id: str = ALICE, password: str = ALICE_PASSWORD) -> str:
    """Returns the message of the BackendError that check_credentials must raise."""
    with pytest.raises(BackendError) as info:
        await client.check_credentials(user_id, password)
    return str(info.value)


async def _check_lookup_fails(client: Ma1sdClient) -> str:
    """Returns the message of the BackendError that lookup_threepid must raise."""
    with pytest.raises(BackendError) as info:
        await client.lookup_threepid("email", "alice@example.com")
    return str(info.value)


# -- replies -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_success_reply_is_parsed(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply == AuthReply(
        success=True,
        display_name="Alice Liddell",
        three_pids=(
            ThreePid(medium="email", address="Alice@Example.com"),
            ThreePid(medium="msisdn", address="+44 20 7946 0000"),
        ),
    )


@pytest_twisted.ensureDeferred
async def test_success_without_profile_data(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials(BOB, BOB_PASSWORD)
    # ma1sd sent an explicit empty list, which is not the same as no list.
    assert reply == AuthReply(success=True, display_name=None, three_pids=())


@pytest_twisted.ensureDeferred
async def test_success_without_three_pids_list_gives_none(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("body", body=b'{"auth": {"success": true, "display_name": " Carol "}}')
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials("@carol:example.com", "whatever")
    assert reply == AuthReply(success=True, display_name="Carol", three_pids=None)


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_success_false(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials(ALICE, "wrong password")
    assert reply == AuthReply(success=False)
    assert reply.display_name is None
    assert reply.three_pids is None


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_success_false(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials("@nobody:example.com", ALICE_PASSWORD)
    assert reply.success is False


@pytest.mark.parametrize(
    "body,key",
    [
        (b'{"auth": {"success": false, "success": true}}', "success"),
        (b'{"auth": {"success": false}, "auth": {"success": true}}', "auth"),
        (
            b'{"auth": {"success": true, "profile": {"three_pids": '
            b'[{"medium": "email", "medium": "msisdn", "address": "447700900999"}]}}}',
            "medium",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_reply_with_duplicate_key_is_backend_error(
    fake: FakeMa1sd, make_client: ClientFactory, body: bytes, key: str
) -> None:
    fake.fault = Fault("body", body=body)
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    assert message == "reply has a duplicate key '%s'" % key


@pytest_twisted.ensureDeferred
async def test_malformed_reply_is_backend_error(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("body", body=b'{"auth": {"success": "true"}}')
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    assert "auth.success" in message


# -- the request ma1sd receives -------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "//"], ids=["plain", "trailing-slash", "two-slashes"])
@pytest_twisted.ensureDeferred
async def test_request_body_path_and_headers(fake: FakeMa1sd, make_client: ClientFactory, suffix: str) -> None:
    client = make_client(endpoint=fake.url + suffix)
    await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == CHECK_CREDENTIALS_PATH
    assert request["query"] == {}
    assert json.loads(request["body"]) == {"user": {"id": ALICE, "password": ALICE_PASSWORD}}
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["content-length"] == str(len(request["body"]))
    assert request["headers"]["accept"] == "application/json"
    assert request["headers"]["user-agent"].startswith("rest_auth_provider/")


@pytest_twisted.ensureDeferred
async def test_endpoint_with_path_prefix(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url + "/ma1sd/")
    # The fake serves only the root paths, so the prefixed one is a 404.
    message = await _check_fails(client)
    assert message == "HTTP 404"
    assert [r["path"] for r in fake.requests] == ["/ma1sd" + CHECK_CREDENTIALS_PATH]


@pytest_twisted.ensureDeferred
async def test_password_with_unicode_and_quotes_arrives_intact(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    password = 'p\u00e4ss "w\u00f6rd" \\ \u2603'
    fake.add_user("@dora:example.com", password)
    client = make_client(endpoint=fake.url)
    reply = await client.check_credentials("@dora:example.com", password)
    assert reply.success is True
    assert fake.requests[0]["password"] == password


# -- failures --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connection_refused(make_client: ClientFactory) -> None:
    stopped = FakeMa1sd().start()
    url = stopped.url
    stopped.stop()
    client = make_client(endpoint=url, timeout=2)
    message = await _check_fails(client)
    assert "connection refused" in message


@pytest_twisted.ensureDeferred
async def test_hanging_server_times_out(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("hang")
    client = make_client(endpoint=fake.url, timeout=0.5)
    started = time.monotonic()
    message = await _check_fails(client)
    elapsed = time.monotonic() - started
    assert message == "no complete answer within 0.5 s"
    assert 0.4 <= elapsed < 1.5
    # The deadline is not a reason to ask again.
    assert len(fake.requests) == 1
    assert client.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_trickling_body_times_out(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    # Headers arrive at once, then one byte every 0.1 s: the whole reply would take seconds.
    fake.fault = Fault("trickle", seconds=0.1)
    client = make_client(endpoint=fake.url, timeout=0.5)
    started = time.monotonic()
    message = await _check_fails(client)
    elapsed = time.monotonic() - started
    assert message == "no complete answer within 0.5 s"
    assert elapsed < 1.5
    assert len(fake.requests) == 1


@pytest_twisted.ensureDeferred
async def test_slow_but_complete_reply_within_timeout(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.delay = 0.2
    client = make_client(endpoint=fake.url, timeout=1)
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True


@pytest_twisted.ensureDeferred
async def test_redirect_is_not_followed(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("redirect", status=302, location="http://127.0.0.1:9/elsewhere")
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    assert "redirect" in message
    assert "HTTP 302" in message
    assert "http://127.0.0.1:9/elsewhere" in message
    assert len(fake.requests) == 1


@pytest_twisted.ensureDeferred
async def test_redirect_target_is_shown_without_credentials_or_control_characters(
    fake: FakeMa1sd, make_client: ClientFactory
) -> None:
    fake.fault = Fault("redirect", status=301, location="http://svc:Pa55#w/ord!@evil.example/\x1b[2J\x07x")
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    assert message == "HTTP 301 redirect to http://***@evil.example/\\x1b[2J\\x07x not followed (check 'endpoint')"


@pytest.mark.parametrize("status", [500, 404, 401, 204])
@pytest_twisted.ensureDeferred
async def test_error_status_is_backend_error(fake: FakeMa1sd, make_client: ClientFactory, status: int) -> None:
    fake.fault = Fault("status", status=status, body=b'{"auth": {"success": true}}' if status != 204 else b"")
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    if status == 204:
        # A 2xx without a body is not a verdict.
        assert "not JSON" in message
    else:
        assert message == "HTTP %d" % status


@pytest_twisted.ensureDeferred
async def test_non_json_reply(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("body", body=b"<html><body>Bad gateway</body></html>")
    client = make_client(endpoint=fake.url)
    message = await _check_fails(client)
    assert "not JSON" in message


@pytest_twisted.ensureDeferred
async def test_reply_larger_than_max_response_size(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("huge", size=2048)
    client = make_client(endpoint=fake.url, max_response_size=1024)
    message = await _check_fails(client)
    assert "too large" in message


@pytest_twisted.ensureDeferred
async def test_reply_just_under_max_response_size_is_accepted(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("huge", size=900)
    client = make_client(endpoint=fake.url, max_response_size=1024)
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True


@pytest_twisted.ensureDeferred
async def test_body_cut_off(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("cutoff")
    client = make_client(endpoint=fake.url, timeout=2)
    started = time.monotonic()
    message = await _check_fails(client)
    assert "connection closed" in message
    # Reported as soon as the connection closes, not at the deadline.
    assert time.monotonic() - started < 1.5


@pytest_twisted.ensureDeferred
async def test_closed_without_reply(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("close")
    client = make_client(endpoint=fake.url, timeout=2)
    message = await _check_fails(client)
    assert "connection closed before a reply" in message


@pytest_twisted.ensureDeferred
async def test_closed_without_reply_on_fresh_connection_is_not_retried(
    fake: FakeMa1sd, make_client: ClientFactory
) -> None:
    fake.fault = Fault("close")
    client = make_client(endpoint=fake.url, timeout=2)
    await _check_fails(client)
    # The password check reached ma1sd's handler on a new connection: asking
    # again would count a second (failed) attempt against the directory.
    assert len(fake.requests_for(CHECK_CREDENTIALS_PATH)) == 1


# -- TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_fake(certs: CertPaths) -> Iterator[FakeMa1sd]:
    server = FakeMa1sd(tls=certs.server).start()
    _add_users(server)
    yield server
    server.stop()


@pytest.fixture
def self_signed_fake(certs: CertPaths) -> Iterator[FakeMa1sd]:
    server = FakeMa1sd(tls=certs.self_signed).start()
    _add_users(server)
    yield server
    server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_self_signed_not_trusted(self_signed_fake: FakeMa1sd, make_client: ClientFactory) -> None:
    assert self_signed_fake.url.startswith("https://")
    client = make_client(endpoint=self_signed_fake.url, timeout=2)
    message = await _check_fails(client)
    assert "TLS" in message
    assert self_signed_fake.requests == []


@pytest_twisted.ensureDeferred
async def test_tls_certificate_not_signed_by_configured_ca(
    self_signed_fake: FakeMa1sd, make_client: ClientFactory, certs: CertPaths
) -> None:
    client = make_client(endpoint=self_signed_fake.url, timeout=2, tls={"ca_file": certs.ca_cert})
    message = await _check_fails(client)
    assert "TLS" in message
    assert self_signed_fake.requests == []


@pytest_twisted.ensureDeferred
async def test_tls_with_configured_ca(tls_fake: FakeMa1sd, make_client: ClientFactory, certs: CertPaths) -> None:
    client = make_client(endpoint=tls_fake.url, timeout=2, tls={"ca_file": certs.ca_cert})
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True
    assert reply.display_name == "Alice Liddell"
    assert json.loads(tls_fake.requests[0]["body"]) == {"user": {"id": ALICE, "password": ALICE_PASSWORD}}


@pytest_twisted.ensureDeferred
async def test_tls_ca_signed_server_not_trusted_without_ca_file(
    tls_fake: FakeMa1sd, make_client: ClientFactory
) -> None:
    client = make_client(endpoint=tls_fake.url, timeout=2)
    message = await _check_fails(client)
    assert "TLS" in message


@pytest_twisted.ensureDeferred
async def test_tls_with_client_certificate_configured(
    tls_fake: FakeMa1sd, make_client: ClientFactory, certs: CertPaths
) -> None:
    client = make_client(
        endpoint=tls_fake.url,
        timeout=2,
        tls={"ca_file": certs.ca_cert, "client_certificate": certs.client_cert, "client_key": certs.client_key},
    )
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True


def test_tls_client_key_not_matching_certificate_is_refused_at_start(certs: CertPaths) -> None:
    config = parse_config(
        {
            "endpoint": "https://127.0.0.1:1",
            "tls": {"ca_file": certs.ca_cert, "client_certificate": certs.client_cert, "client_key": certs.server_key},
        }
    )
    with pytest.raises(VerifyError):
        Ma1sdClient(config)


def test_tls_ca_file_without_certificate_is_refused_at_start(tmp_path: Path) -> None:
    not_a_ca = tmp_path / "empty.pem"
    not_a_ca.write_text("nothing to see here\n")
    config = parse_config({"endpoint": "https://127.0.0.1:1", "tls": {"ca_file": str(not_a_ca)}})
    with pytest.raises(ValueError, match="no PEM certificate"):
        Ma1sdClient(config)


# -- configured headers ----------------------------------------------------------


@pytest.fixture
def guarded_fake() -> Iterator[FakeMa1sd]:
    server = FakeMa1sd(required_headers={"Authorization": "Bearer x", "X-Token": "s3cret-token"}).start()
    _add_users(server)
    yield server
    server.stop()


@pytest_twisted.ensureDeferred
async def test_configured_headers_reach_server(
    guarded_fake: FakeMa1sd, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    client = make_client(
        endpoint=guarded_fake.url,
        headers={"Authorization": "Bearer x"},
        header_files={"X-Token": str(token_file)},
    )
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True
    headers = guarded_fake.requests[0]["headers"]
    assert headers["authorization"] == "Bearer x"
    assert headers["x-token"] == "s3cret-token"


@pytest_twisted.ensureDeferred
async def test_configured_headers_also_sent_on_lookup(
    guarded_fake: FakeMa1sd, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token")
    client = make_client(
        endpoint=guarded_fake.url,
        headers={"Authorization": "Bearer x"},
        header_files={"X-Token": str(token_file)},
    )
    assert await client.lookup_threepid("email", "alice@example.com") == ALICE


def test_header_file_changed_into_two_lines_after_the_config_check_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    config = parse_config({"endpoint": "http://127.0.0.1:1", "header_files": {"X-Token": str(token_file)}})
    token_file.write_text("s3cret-token\r\nX-Injected: 1\n")
    with pytest.raises(ValueError, match="more than one line") as info:
        Ma1sdClient(config)
    assert "s3cret" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_missing_headers_are_refused_by_server(guarded_fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=guarded_fake.url, headers={"Authorization": "Bearer x"})
    message = await _check_fails(client)
    assert message == "HTTP 401"


# -- concurrency and connections -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_max_concurrent_requests(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.delay = 0.3
    client = make_client(endpoint=fake.url, max_concurrent_requests=2, timeout=1.8)
    calls = [defer.ensureDeferred(client.check_credentials(ALICE, ALICE_PASSWORD)) for _ in range(6)]
    assert client.in_flight == 2
    results = await defer.gatherResults(calls, consumeErrors=True)
    assert [r.success for r in results] == [True] * 6
    assert len(fake.requests) == 6
    assert fake.max_in_flight == 2
    assert client.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_waiting_for_a_slot_counts_against_the_timeout(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.delay = 0.4
    client = make_client(endpoint=fake.url, max_concurrent_requests=1, timeout=0.6)
    first = defer.ensureDeferred(client.check_credentials(ALICE, ALICE_PASSWORD))
    second = defer.ensureDeferred(_check_fails(client))
    assert (await first).success is True
    # The second call waited ~0.4 s for the slot, then could not finish in the 0.2 s left.
    assert await second == "no complete answer within 0.6 s"
    assert client.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_connections_are_reused(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url)
    for _ in range(10):
        reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
        assert reply.success is True
    assert len(fake.requests) == 10
    assert fake.connections == 1


@pytest_twisted.ensureDeferred
async def test_client_recovers_after_a_failure(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("hang")
    client = make_client(endpoint=fake.url, timeout=0.5)
    await _check_fails(client)
    fake.fault = Fault()
    reply = await client.check_credentials(ALICE, ALICE_PASSWORD)
    assert reply.success is True


# -- 3PID lookup -----------------------------------------------------------------


@pytest.mark.parametrize(
    "medium, address, expected",
    [
        ("email", "alice@example.com", ALICE),
        ("msisdn", "442079460000", ALICE),
        ("email", "nobody@example.com", None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_lookup_threepid(
    fake: FakeMa1sd, make_client: ClientFactory, medium: str, address: str, expected: Any
) -> None:
    client = make_client(endpoint=fake.url)
    assert await client.lookup_threepid(medium, address) == expected
    request = fake.requests[0]
    assert request["method"] == "GET"
    assert request["path"] == DEFAULT_LOOKUP_PATH
    assert request["query"] == {"medium": [medium], "address": [address]}


@pytest_twisted.ensureDeferred
async def test_lookup_address_is_url_encoded(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.add_user("@eve:example.com", "x", emails=("e+ve&x=1@example.com",))
    client = make_client(endpoint=fake.url)
    assert await client.lookup_threepid("email", "e+ve&x=1@example.com") == "@eve:example.com"
    assert fake.requests[0]["query"] == {"medium": ["email"], "address": ["e+ve&x=1@example.com"]}


@pytest_twisted.ensureDeferred
async def test_lookup_custom_path(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    client = make_client(endpoint=fake.url, threepid_login={"lookup_path": "/custom/lookup"})
    message = await _check_lookup_fails(client)
    assert message == "HTTP 404"
    assert fake.requests[0]["path"] == "/custom/lookup"


@pytest_twisted.ensureDeferred
async def test_lookup_malformed_reply(fake: FakeMa1sd, make_client: ClientFactory) -> None:
    fake.fault = Fault("body", body=b'{"mxid": 42}')
    client = make_client(endpoint=fake.url)
    message = await _check_lookup_fails(client)
    assert "mxid" in message


# -- sending a request twice ------------------------------------------------------


class _DroppingServer:
    """A real HTTP/1.1 server on 127.0.0.1 that keeps connections alive and,
    for the requests whose number on their connection is in ``drop``, reads
    the whole request, records it, then closes the socket without replying
    (as a server that crashed or timed out after reading would). Every
    request it read is in ``requests`` as (connection number, number on the
    connection, method, path), whether it was answered or not."""

    def __init__(self, drop: Set[int]):
        self.drop = drop
        self.requests: List[Tuple[int, int, str, str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.url = "http://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._open: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()

    def requests_for(self, method: str) -> List[Tuple[int, int]]:
        """Returns (connection number, number on the connection) of every ``method`` request read."""
        with self._lock:
            return [(c, n) for c, n, m, _ in self.requests if m == method]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffered = b""
        with conn:
            for index in range(1, 100):
                request = self._read_request(conn, buffered)
                if request is None:
                    return
                method, path, buffered = request
                with self._lock:
                    self.requests.append((number, index, method, path))
                if index in self.drop:
                    return  # closes the socket: no reply
                if method == "POST":
                    body = b'{"auth": {"success": true}}'
                else:
                    body = json.dumps({"mxid": ALICE}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )

    @staticmethod
    def _read_request(conn: socket.socket, buffered: bytes) -> Optional[Tuple[str, str, bytes]]:
        """Returns (method, path, bytes read beyond the request) once the whole request is read."""
        while b"\r\n\r\n" not in buffered:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            buffered += chunk
        head, _, rest = buffered.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return method, target.split("?")[0], rest[length:]


@pytest.fixture
def dropping_server(request: pytest.FixtureRequest) -> Iterator[_DroppingServer]:
    server = _DroppingServer(drop=set(request.param))
    yield server
    server.stop()


@pytest.mark.parametrize("dropping_server", [{2}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_password_check_read_then_dropped_on_a_kept_alive_connection_is_not_sent_again(
    dropping_server: _DroppingServer, make_client: ClientFactory
) -> None:
    client = make_client(endpoint=dropping_server.url, timeout=2)
    assert (await client.check_credentials(ALICE, ALICE_PASSWORD)).success is True
    # The second check goes out on the kept-alive connection; the server reads
    # it (and could count it against a lockout policy), then closes.
    message = await _check_fails(client)
    assert "connection closed before a reply" in message
    assert dropping_server.requests_for("POST") == [(1, 1), (1, 2)]
    assert dropping_server.connections == 1


@pytest.mark.parametrize("dropping_server", [{2}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_lookup_read_then_dropped_on_a_kept_alive_connection_is_answered_by_a_retry(
    dropping_server: _DroppingServer, make_client: ClientFactory
) -> None:
    client = make_client(endpoint=dropping_server.url, timeout=2)
    assert await client.lookup_threepid("email", "alice@example.com") == ALICE
    assert await client.lookup_threepid("email", "alice@example.com") == ALICE
    # The dropped lookup reached the server; the retry went out on a new connection.
    assert dropping_server.requests_for("GET") == [(1, 1), (1, 2), (2, 1)]


@pytest.mark.parametrize("dropping_server", [{2}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_lookup_retry_uses_a_new_connection_not_another_idle_one(
    dropping_server: _DroppingServer, make_client: ClientFactory
) -> None:
    # Two kept-alive connections, both of which drop their next request (as
    # after a restart of the server): the retry must not go out on the other.
    client = make_client(endpoint=dropping_server.url, timeout=2, max_concurrent_requests=4)
    first = [defer.ensureDeferred(client.lookup_threepid("email", "alice@example.com")) for _ in range(2)]
    assert await defer.gatherResults(first) == [ALICE, ALICE]
    assert dropping_server.connections == 2
    assert await client.lookup_threepid("email", "alice@example.com") == ALICE
    requests = dropping_server.requests_for("GET")
    assert sorted(requests[:2]) == [(1, 1), (2, 1)]
    assert requests[2][1] == 2  # read on a kept-alive connection, then dropped
    assert requests[3:] == [(3, 1)]


@pytest.mark.parametrize("dropping_server", [{1}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_lookup_dropped_on_a_new_connection_is_not_retried(
    dropping_server: _DroppingServer, make_client: ClientFactory
) -> None:
    client = make_client(endpoint=dropping_server.url, timeout=2)
    message = await _check_lookup_fails(client)
    assert "connection closed before a reply" in message
    assert dropping_server.requests_for("GET") == [(1, 1)]


def _dead_connection() -> HTTP11ClientProtocol:
    """Returns an HTTP/1.1 client connection that Twisted already saw closed."""
    protocol = HTTP11ClientProtocol()
    protocol.connectionLost(Failure(ConnectionDone()))
    return protocol


@pytest.mark.parametrize("dropping_server", [set()], indirect=True)
@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest_twisted.ensureDeferred
async def test_request_not_sent_is_retried_on_a_new_connection(
    dropping_server: _DroppingServer, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    client = make_client(endpoint=dropping_server.url, timeout=2)
    pool: Any = client._pool
    get_connection = pool.getConnection
    handed_out: List[HTTP11ClientProtocol] = []

    def first_a_dead_connection(key: Any, endpoint: Any) -> Any:
        # As if the pool handed out a kept-alive connection that was found
        # closed before the request was written: Twisted refuses to send on
        # it with RequestNotSent, so the request provably never left.
        if not handed_out:
            handed_out.append(_dead_connection())
            pool.last_was_new = False
            return defer.succeed(handed_out[0])
        return get_connection(key, endpoint)

    monkeypatch.setattr(pool, "getConnection", first_a_dead_connection)
    if method == "POST":
        assert (await client.check_credentials(ALICE, ALICE_PASSWORD)).success is True
    else:
        assert await client.lookup_threepid("email", "alice@example.com") == ALICE
    assert len(handed_out) == 1
    assert dropping_server.requests_for(method) == [(1, 1)]


@pytest.mark.parametrize("dropping_server", [set()], indirect=True)
@pytest_twisted.ensureDeferred
async def test_request_not_sent_twice_gives_up(
    dropping_server: _DroppingServer, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(endpoint=dropping_server.url, timeout=2)
    pool: Any = client._pool
    handed_out: List[HTTP11ClientProtocol] = []

    def only_dead_connections(key: Any, endpoint: Any) -> Any:
        handed_out.append(_dead_connection())
        return defer.succeed(handed_out[-1])

    monkeypatch.setattr(pool, "getConnection", only_dead_connections)
    message = await _check_fails(client)
    assert "RequestNotSent" in message
    assert len(handed_out) == 2
    assert dropping_server.requests == []


def _failed(exc_type: Any, reason: BaseException) -> BaseException:
    return exc_type([Failure(reason)])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "exc, method, reused, expected",
    [
        (RequestNotSent(), b"POST", True, True),
        (RequestNotSent(), b"POST", False, True),
        (RequestNotSent(), b"GET", True, True),
        (_failed(ResponseNeverReceived, ConnectionDone()), b"POST", True, False),
        (_failed(ResponseNeverReceived, ConnectionDone()), b"GET", True, True),
        (_failed(ResponseNeverReceived, ConnectionDone()), b"GET", False, False),
        (_failed(ResponseFailed, ConnectionDone()), b"GET", True, False),
        (ValueError(), b"GET", True, False),
    ],
)
def test_retry_rule(exc: BaseException, method: bytes, reused: bool, expected: bool) -> None:
    assert _retryable(exc, method, reused) is expected


def test_no_retry_after_a_tls_failure() -> None:
    from OpenSSL import SSL

    assert _retryable(_failed(ResponseNeverReceived, SSL.Error()), b"GET", True) is False
