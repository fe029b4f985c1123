"""The treq transport both backends share.

Timing (the deadline over slot wait, connect, headers and body; the
concurrency cap) runs on Twisted's ``MemoryReactorClock`` through the
``reactor=`` parameter: the test plays the server on the client's connections
and moves the clock, so nothing depends on how fast this machine is.
Everything about real sockets (refused connections, TLS, servers that read a
request and drop the connection, cookies, compression) runs against real
servers on 127.0.0.1: the threaded fake ma1sd, a raw socket server, or a
``twisted.web`` site in this process. Those tests keep the default deadline
(10 s) and never depend on it: each outcome they check comes without waiting,
and a server that must hold requests holds them until the test lets them go.
"""

import gzip
import json
import socket
import threading
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Set, Tuple, cast

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, VerifyError
from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web._newclient import HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from rest_auth_provider import metrics, transport
from rest_auth_provider.config import parse_config
from rest_auth_provider.transport import BackendError, HttpReply, Transport, _retryable, decode_reply
from support.certs import CertPaths, write_certs
from support.fake_ma1sd import FakeMa1sd, Fault
from support.memory_reactor import MemoryClock
from support.twisted_helpers import async_yield_fixture, ensure_deferred, string_transport, take_written
from tests.unit.conftest import Serve

ALICE = "@alice:example.com"
ALICE_PASSWORD = "correct horse battery staple"
BODY = {"user": {"id": ALICE, "password": ALICE_PASSWORD}}
CHECK = "/_matrix-internal/identity/v1/check_credentials"

TransportFactory = Callable[..., Transport]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_certs(str(tmp_path_factory.mktemp("certs")))


@async_yield_fixture
async def make() -> AsyncIterator[TransportFactory]:
    """Returns a factory: ``make(endpoint=..., **other_config_keys)``; closes every transport after the test."""
    made: List[Transport] = []

    def factory(**raw: Any) -> Transport:
        made.append(Transport(parse_config(raw)))
        return made[-1]

    yield factory
    for t in made:
        await t.close()


async def _post(t: Transport, url: str) -> HttpReply:
    return await t.request("check_credentials", "POST", url + CHECK, json_body=BODY)


async def _post_fails(t: Transport, url: str) -> str:
    """Returns the message of the BackendError the POST must raise."""
    with pytest.raises(BackendError) as info:
        await _post(t, url)
    return str(info.value)


async def _get(t: Transport, url: str) -> HttpReply:
    return await t.request("lookup", "GET", url + "/lookup", params={"medium": "email", "address": "a@example.com"})


# -- replies and decode_reply ----------------------------------------------------------


@pytest.fixture
def fake(serve: Serve) -> FakeMa1sd:
    server = serve(FakeMa1sd())
    server.add_user(ALICE, ALICE_PASSWORD)
    return server


@pytest.mark.parametrize("status", [200, 401, 404, 500])
@ensure_deferred
async def test_any_complete_reply_is_returned_whatever_its_status(
    fake: FakeMa1sd, make: TransportFactory, status: int
) -> None:
    fake.fault = Fault("status", status=status, body=b'{"errcode": "X"}')
    reply = await _post(make(endpoint=fake.url), fake.url)
    assert reply.status == status
    assert reply.body == b'{"errcode": "X"}'
    assert reply.headers.getRawHeaders(b"content-type") == [b"application/json"]


def _reply(status: int, body: bytes = b"{}", location: Optional[bytes] = None) -> HttpReply:
    headers = Headers({b"Location": [location]} if location is not None else {})
    return HttpReply(status, headers, body)


def test_decode_reply_accepts_2xx_by_default() -> None:
    assert decode_reply(_reply(200, b'{"a": 1}')) == {"a": 1}
    assert decode_reply(_reply(299, b"[]")) == []
    with pytest.raises(BackendError, match="^HTTP 401$"):
        decode_reply(_reply(401, b'{"auth": {"success": false}}'))


def test_decode_reply_with_other_accepted_statuses() -> None:
    accept = {200, 401, 404}.__contains__
    assert decode_reply(_reply(401, b'{"auth": {"success": false}}'), accept) == {"auth": {"success": False}}
    with pytest.raises(BackendError, match="^HTTP 400$"):
        decode_reply(_reply(400), accept)


def test_decode_reply_never_accepts_a_redirect() -> None:
    with pytest.raises(BackendError) as info:
        decode_reply(_reply(302, location=b"http://u:p@evil.example/\x1b[2J"), lambda status: True)
    assert str(info.value) == "HTTP 302 redirect to http://***@evil.example/\\x1b[2J not followed (check 'endpoint')"
    with pytest.raises(BackendError, match="^HTTP 301 redirect to \\? not followed"):
        decode_reply(_reply(301))


@pytest.mark.parametrize(
    "body, message",
    [(b"<html>", "reply is not JSON"), (b"\xff\xfe", "reply is not UTF-8"), (b'{"a": 1, "a": 2}', "duplicate key")],
)
def test_decode_reply_refuses_what_is_not_strict_json(body: bytes, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        decode_reply(_reply(200, body))


# -- failures on real sockets ------------------------------------------------------------


@ensure_deferred
async def test_connection_refused(make: TransportFactory) -> None:
    stopped = FakeMa1sd().start()
    url = stopped.url
    stopped.stop()
    assert "connection refused" in await _post_fails(make(endpoint=url), url)


@ensure_deferred
async def test_redirect_is_not_followed(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("redirect", status=302, location="http://127.0.0.1:9/elsewhere")
    reply = await _post(make(endpoint=fake.url), fake.url)
    assert reply.status == 302
    assert reply.headers.getRawHeaders(b"location") == [b"http://127.0.0.1:9/elsewhere"]
    assert len(fake.requests) == 1
    with pytest.raises(BackendError) as info:
        decode_reply(reply)
    assert "HTTP 302 redirect to http://127.0.0.1:9/elsewhere" in str(info.value)


@ensure_deferred
async def test_redirect_target_is_shown_without_credentials_or_control_characters(
    fake: FakeMa1sd, make: TransportFactory
) -> None:
    fake.fault = Fault("redirect", status=301, location="http://svc:Pa55#w/ord!@evil.example/\x1b[2J\x07x")
    reply = await _post(make(endpoint=fake.url), fake.url)
    with pytest.raises(BackendError) as info:
        decode_reply(reply)
    assert str(info.value) == (
        "HTTP 301 redirect to http://***@evil.example/\\x1b[2J\\x07x not followed (check 'endpoint')"
    )


@ensure_deferred
async def test_reply_larger_than_max_response_size(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("huge", size=2048)
    assert await _post_fails(make(endpoint=fake.url, max_response_size=1024), fake.url) == "reply too large"


@ensure_deferred
async def test_reply_just_under_max_response_size_is_accepted(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("huge", size=900)
    reply = await _post(make(endpoint=fake.url, max_response_size=1024), fake.url)
    assert reply.status == 200
    assert 900 < len(reply.body) <= 1024


@ensure_deferred
async def test_body_cut_off(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("cutoff")
    message = await _post_fails(make(endpoint=fake.url), fake.url)
    assert message == "connection closed before the reply was complete"


@ensure_deferred
async def test_closed_without_reply(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("close")
    assert "connection closed before a reply" in await _post_fails(make(endpoint=fake.url), fake.url)


@ensure_deferred
async def test_closed_without_reply_on_fresh_connection_is_not_retried(fake: FakeMa1sd, make: TransportFactory) -> None:
    fake.fault = Fault("close")
    await _post_fails(make(endpoint=fake.url), fake.url)
    # The password check reached the server's handler on a new connection:
    # asking again would count a second (failed) attempt against the directory.
    assert len(fake.requests_for(CHECK)) == 1


@ensure_deferred
async def test_connections_are_reused(fake: FakeMa1sd, make: TransportFactory) -> None:
    t = make(endpoint=fake.url)
    for _ in range(10):
        assert (await _post(t, fake.url)).status == 200
    assert len(fake.requests) == 10
    assert fake.connections == 1


class _HeldSite(resource.Resource):
    """A twisted.web resource that holds every request until the test answers it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: List[Any] = []
        self.most_held = 0
        self._waiting: List[Tuple[int, defer.Deferred[None]]] = []

    def render(self, request: Any) -> int:
        self.held.append(request)
        self.most_held = max(self.most_held, len(self.held))
        for entry in [w for w in self._waiting if len(self.held) >= w[0]]:
            self._waiting.remove(entry)
            entry[1].callback(None)
        return server.NOT_DONE_YET

    def holding(self, count: int) -> "defer.Deferred[None]":
        """Returns a Deferred that fires once ``count`` requests are held."""
        if len(self.held) >= count:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((count, d))
        return d

    def answer_one(self) -> None:
        request = self.held.pop(0)
        request.setHeader(b"content-type", b"application/json")
        request.write(b'{"auth": {"success": true}}')
        request.finish()


@ensure_deferred
async def test_max_concurrent_requests_on_real_sockets(make: TransportFactory) -> None:
    from twisted.internet import reactor

    held = _HeldSite()
    tcp: Any = reactor  # the module's type does not say it listens on TCP; it does
    port: Any = tcp.listenTCP(0, server.Site(held), interface="127.0.0.1")
    url = "http://127.0.0.1:%d" % port.getHost().port
    try:
        t = make(endpoint=url, max_concurrent_requests=2)
        calls = [defer.ensureDeferred(_post(t, url)) for _ in range(6)]
        assert t.in_flight == 2
        for answered in range(6):
            # Two requests reach the server and wait there; each answer lets one more through.
            await held.holding(min(2, 6 - answered))
            assert len(held.held) == min(2, 6 - answered)
            held.answer_one()
        replies = await defer.gatherResults(calls, consumeErrors=True)
    finally:
        await port.stopListening()
    assert [r.status for r in replies] == [200] * 6
    assert held.most_held == 2
    assert t.in_flight == 0


# -- TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_fake(serve: Serve, certs: CertPaths) -> FakeMa1sd:
    server = serve(FakeMa1sd(tls=certs.server))
    server.add_user(ALICE, ALICE_PASSWORD)
    return server


@pytest.fixture
def self_signed_fake(serve: Serve, certs: CertPaths) -> FakeMa1sd:
    return serve(FakeMa1sd(tls=certs.self_signed))


@ensure_deferred
async def test_tls_self_signed_not_trusted(self_signed_fake: FakeMa1sd, make: TransportFactory) -> None:
    assert self_signed_fake.url.startswith("https://")
    message = await _post_fails(make(endpoint=self_signed_fake.url), self_signed_fake.url)
    assert message == "TLS handshake failed (certificate not trusted or wrong host name?)"
    assert self_signed_fake.requests == []


@ensure_deferred
async def test_tls_certificate_not_signed_by_configured_ca(
    self_signed_fake: FakeMa1sd, make: TransportFactory, certs: CertPaths
) -> None:
    t = make(endpoint=self_signed_fake.url, tls={"ca_file": certs.ca_cert})
    assert "TLS handshake failed" in await _post_fails(t, self_signed_fake.url)
    assert self_signed_fake.requests == []


@ensure_deferred
async def test_tls_with_configured_ca(tls_fake: FakeMa1sd, make: TransportFactory, certs: CertPaths) -> None:
    t = make(endpoint=tls_fake.url, tls={"ca_file": certs.ca_cert})
    for _ in range(3):
        reply = await _post(t, tls_fake.url)
        assert json.loads(reply.body)["auth"]["success"] is True
    assert json.loads(tls_fake.requests[0]["body"]) == BODY
    assert tls_fake.connections == 1


@ensure_deferred
async def test_tls_certificate_for_another_host_name(make: TransportFactory, certs: CertPaths) -> None:
    with FakeMa1sd(tls=certs.other_name) as other:
        t = make(endpoint=other.url, tls={"ca_file": certs.ca_cert})
        message = await _post_fails(t, other.url)
        assert other.requests == []
    assert message == "TLS handshake failed (certificate not trusted or wrong host name?)"


@ensure_deferred
async def test_tls_ca_signed_server_not_trusted_without_ca_file(tls_fake: FakeMa1sd, make: TransportFactory) -> None:
    assert "TLS handshake failed" in await _post_fails(make(endpoint=tls_fake.url), tls_fake.url)


@ensure_deferred
async def test_tls_with_client_certificate_configured(
    tls_fake: FakeMa1sd, make: TransportFactory, certs: CertPaths
) -> None:
    t = make(
        endpoint=tls_fake.url,
        tls={"ca_file": certs.ca_cert, "client_certificate": certs.client_cert, "client_key": certs.client_key},
    )
    assert (await _post(t, tls_fake.url)).status == 200


def test_tls_client_key_not_matching_certificate_is_refused_at_start(certs: CertPaths) -> None:
    config = parse_config(
        {
            "endpoint": "https://127.0.0.1:1",
            "tls": {"ca_file": certs.ca_cert, "client_certificate": certs.client_cert, "client_key": certs.server_key},
        }
    )
    with pytest.raises(VerifyError):
        Transport(config)


def test_tls_ca_file_without_certificate_is_refused_at_start(tmp_path: Path) -> None:
    not_a_ca = tmp_path / "empty.pem"
    not_a_ca.write_text("nothing to see here\n")
    config = parse_config({"endpoint": "https://127.0.0.1:1", "tls": {"ca_file": str(not_a_ca)}})
    with pytest.raises(ValueError, match="no PEM certificate"):
        Transport(config)


# -- configured headers ----------------------------------------------------------


@pytest.fixture
def guarded_fake(serve: Serve) -> FakeMa1sd:
    server = serve(FakeMa1sd(required_headers={"Authorization": "Bearer x", "X-Token": "s3cret-token"}))
    server.add_user(ALICE, ALICE_PASSWORD)
    return server


@ensure_deferred
async def test_configured_headers_reach_server(guarded_fake: FakeMa1sd, make: TransportFactory, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    t = make(
        endpoint=guarded_fake.url, headers={"Authorization": "Bearer x"}, header_files={"X-Token": str(token_file)}
    )
    assert (await _post(t, guarded_fake.url)).status == 200
    headers = guarded_fake.requests[0]["headers"]
    assert headers["authorization"] == "Bearer x"
    assert headers["x-token"] == "s3cret-token"


@ensure_deferred
async def test_missing_headers_are_refused_by_server(guarded_fake: FakeMa1sd, make: TransportFactory) -> None:
    t = make(endpoint=guarded_fake.url, headers={"Authorization": "Bearer x"})
    assert (await _post(t, guarded_fake.url)).status == 401


def test_header_file_changed_into_two_lines_after_the_config_check_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    config = parse_config({"endpoint": "http://127.0.0.1:1", "header_files": {"X-Token": str(token_file)}})
    token_file.write_text("s3cret-token\r\nX-Injected: 1\n")
    with pytest.raises(ValueError, match="more than one line") as info:
        Transport(config)
    assert "s3cret" not in str(info.value)


# -- what treq adds, and what it must not ---------------------------------------------


class _Site(resource.Resource):
    """A twisted.web resource that records each request's headers and
    answers with ``reply`` (status, headers, body)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Dict[str, List[str]]] = []
        self.reply: Tuple[int, Dict[str, str], bytes] = (200, {}, b"{}")

    def render(self, request: Any) -> bytes:
        self.requests.append(
            {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        )
        status, headers, body = self.reply
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


@async_yield_fixture
async def site() -> AsyncIterator[Tuple[_Site, str]]:
    """A twisted.web server in this process on 127.0.0.1: (its resource, its URL)."""
    from twisted.internet import reactor

    recorder = _Site()
    tcp: Any = reactor  # the module's type does not say it listens on TCP; it does
    port: Any = tcp.listenTCP(0, server.Site(recorder), interface="127.0.0.1")
    yield recorder, "http://127.0.0.1:%d" % port.getHost().port
    await port.stopListening()


@ensure_deferred
async def test_a_cookie_set_by_the_server_is_never_sent_back(site: Tuple[_Site, str], make: TransportFactory) -> None:
    recorder, url = site
    recorder.reply = (200, {"Set-Cookie": "session=alice-s3ssion; Path=/"}, b"{}")
    t = make(endpoint=url)
    await _post(t, url)
    await _get(t, url)
    await _post(t, url)
    assert len(recorder.requests) == 3
    assert [r.get("cookie") for r in recorder.requests] == [None, None, None]


@ensure_deferred
async def test_a_keeping_jar_would_send_the_cookie_back(
    site: Tuple[_Site, str], make: TransportFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: the server's cookie does come back when
    # the transport keeps cookies, so that test can fail.
    monkeypatch.setattr(transport, "_NoCookies", CookieJar)
    recorder, url = site
    recorder.reply = (200, {"Set-Cookie": "session=alice-s3ssion; Path=/"}, b"{}")
    t = make(endpoint=url)
    await _post(t, url)
    await _post(t, url)
    assert [r.get("cookie") for r in recorder.requests] == [None, ["session=alice-s3ssion"]]


@ensure_deferred
async def test_a_compressed_reply_is_read_as_sent_never_inflated(
    site: Tuple[_Site, str], make: TransportFactory
) -> None:
    recorder, url = site
    # 8 MiB of JSON in 8 KiB of gzip: inflating it would blow max_response_size 64 times over.
    inflated = b'{"pad": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    compressed = gzip.compress(inflated)
    assert len(compressed) < 64 * 1024
    recorder.reply = (200, {"Content-Encoding": "gzip", "Content-Type": "application/json"}, compressed)
    t = make(endpoint=url, max_response_size=128 * 1024)
    reply = await _post(t, url)
    assert "accept-encoding" not in recorder.requests[0]
    assert reply.body == compressed
    with pytest.raises(BackendError, match="not UTF-8|not JSON"):
        decode_reply(reply)


@ensure_deferred
async def test_headers_given_to_treq_stay_as_built(site: Tuple[_Site, str], make: TransportFactory) -> None:
    # They are built once and shared by every request: nothing on the way may add to them.
    recorder, url = site
    t = make(endpoint=url, headers={"Authorization": "Bearer x"})
    built = [sorted(h.getAllRawHeaders()) for h in (t._headers, t._json_headers)]
    await _post(t, url)
    await _get(t, url)
    assert [sorted(h.getAllRawHeaders()) for h in (t._headers, t._json_headers)] == built
    assert recorder.requests[0]["content-type"] == ["application/json"]
    assert "content-type" not in recorder.requests[1]
    assert [r["authorization"] for r in recorder.requests] == [["Bearer x"], ["Bearer x"]]


# -- the deadline, on a controlled clock ----------------------------------------------------

MEMORY_ENDPOINT = "http://backend.test:8090"


class _Connection:
    """The server's end of the client's ``index``-th connection, played by the test."""

    def __init__(self, clock: MemoryClock, index: int) -> None:
        host, port, factory, _, _ = clock.tcpClients[index]
        address = cast(IAddress, IPv4Address("TCP", host, port))
        protocol = factory.buildProtocol(address)
        assert protocol is not None
        self.protocol = protocol
        self.transport = string_transport(address)
        self.protocol.makeConnection(cast(ITransport, self.transport))

    def received(self) -> bytes:
        """Returns what the client sent so far, and forgets it."""
        return take_written(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def _ok(body: bytes = b'{"auth": {"success": true}}') -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _memory(clock: MemoryClock, **raw: Any) -> Transport:
    return Transport(parse_config(dict({"endpoint": MEMORY_ENDPOINT}, **raw)), reactor=cast(IReactorTime, clock))


def _start_post(t: Transport) -> "defer.Deferred[HttpReply]":
    return defer.ensureDeferred(t.request("check_credentials", "POST", MEMORY_ENDPOINT + CHECK, json_body=BODY))


def _result(d: "defer.Deferred[HttpReply]") -> HttpReply:
    results: List[Any] = []
    d.addBoth(results.append)
    assert results, "no result yet"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    assert isinstance(results[0], HttpReply)
    return results[0]


def _error(d: "defer.Deferred[Any]") -> str:
    """Returns the message of the BackendError ``d`` failed with."""
    failures: List[Failure] = []
    d.addErrback(failures.append)
    assert failures, "no failure yet"
    assert failures[0].check(BackendError), failures[0]
    return str(failures[0].value)


def _observed(label: str) -> Tuple[float, float]:
    """Returns (count, sum) of the duration metric for ``label``."""
    values = {"_count": 0.0, "_sum": 0.0}
    for family in metrics.backend_request_duration.collect():
        for sample in family.samples:
            for suffix in values:
                if sample.name.endswith(suffix) and sample.labels.get("endpoint") == label:
                    values[suffix] = sample.value
    return values["_count"], values["_sum"]


def test_the_request_on_the_wire() -> None:
    clock = MemoryClock()
    d = _start_post(_memory(clock))
    connection = _Connection(clock, 0)
    head, _, body = connection.received().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST " + CHECK.encode() + b" HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert headers[b"host"] == b"backend.test:8090"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert b"accept-encoding" not in headers
    assert json.loads(body) == BODY
    connection.send(_ok())
    assert _result(d).status == 200


def test_no_answer_fails_at_the_deadline_and_is_not_sent_again() -> None:
    clock = MemoryClock()
    t = _memory(clock, timeout=0.5)
    count, total = _observed("check_credentials")
    d = _start_post(t)
    connection = _Connection(clock, 0)
    assert connection.received().startswith(b"POST ")
    clock.advance(0.25)
    clock.advance(0.125)
    assert not d.called
    clock.advance(0.125)
    assert _error(d) == "no complete answer within 0.5 s"
    assert len(clock.tcpClients) == 1
    assert connection.received() == b""
    assert t.in_flight == 0
    # The metric saw the whole wait.
    observed_count, observed_sum = _observed("check_credentials")
    assert observed_count == count + 1
    assert observed_sum == pytest.approx(total + 0.5)


def test_a_connection_never_established_fails_at_the_deadline() -> None:
    clock = MemoryClock()
    t = _memory(clock, timeout=0.5)
    d = _start_post(t)
    assert len(clock.tcpClients) == 1  # asked for, never accepted
    clock.advance(0.375)
    assert not d.called
    clock.advance(0.125)
    assert _error(d) == "no complete answer within 0.5 s"
    assert t.in_flight == 0


def test_a_trickling_body_fails_at_the_deadline() -> None:
    clock = MemoryClock()
    d = _start_post(_memory(clock, timeout=0.5))
    connection = _Connection(clock, 0)
    # The headers at once, then a byte every 1/8 s: the whole body would take 12 s.
    connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 96\r\n\r\n")
    for _ in range(3):
        connection.send(b" ")
        clock.advance(0.125)
        assert not d.called
    connection.send(b" ")
    clock.advance(0.125)
    assert _error(d) == "no complete answer within 0.5 s"


def test_a_reply_complete_just_before_the_deadline_is_taken() -> None:
    clock = MemoryClock()
    t = _memory(clock, timeout=0.5)
    d = _start_post(t)
    connection = _Connection(clock, 0)
    reply = _ok()
    head, body = reply[: reply.index(b"\r\n\r\n") + 4], reply[reply.index(b"\r\n\r\n") + 4 :]
    clock.advance(0.25)
    connection.send(head)
    for byte in body[:-1]:
        connection.send(bytes([byte]))
    clock.advance(0.2421875)
    connection.send(body[-1:])
    assert json.loads(_result(d).body) == {"auth": {"success": True}}
    clock.advance(10)  # the deadline was cancelled: nothing fires later
    assert t.in_flight == 0


def test_a_body_cut_off_fails_at_once_not_at_the_deadline() -> None:
    clock = MemoryClock()
    d = _start_post(_memory(clock, timeout=0.5))
    connection = _Connection(clock, 0)
    connection.send(b'HTTP/1.1 200 OK\r\nContent-Length: 96\r\n\r\n{"auth":')
    connection.close()
    assert _error(d) == "connection closed before the reply was complete"


def test_a_reply_without_length_fails_as_soon_as_it_passes_the_cap() -> None:
    clock = MemoryClock()
    d = _start_post(_memory(clock, timeout=0.5, max_response_size=1024))
    connection = _Connection(clock, 0)
    connection.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    connection.send(b"x" * 1024)
    assert not d.called
    connection.send(b"x")
    assert _error(d) == "reply too large"


def test_waiting_for_a_slot_counts_against_the_deadline() -> None:
    clock = MemoryClock()
    t = _memory(clock, timeout=0.5, max_concurrent_requests=1)
    first, second = _start_post(t), _start_post(t)
    assert t.in_flight == 1
    connection = _Connection(clock, 0)
    assert connection.received().count(b"POST ") == 1
    clock.advance(0.375)
    connection.send(_ok())
    assert _result(first).status == 200
    # The second went out on the same kept-alive connection after 3/8 s in the queue ...
    assert connection.received().count(b"POST ") == 1
    assert len(clock.tcpClients) == 1
    clock.advance(0.125)
    # ... and had 1/8 s left for its answer.
    assert _error(second) == "no complete answer within 0.5 s"
    assert t.in_flight == 0


def test_max_concurrent_requests() -> None:
    clock = MemoryClock()
    t = _memory(clock, max_concurrent_requests=2)
    calls = [_start_post(t) for _ in range(6)]
    assert t.in_flight == 2
    connections = [_Connection(clock, 0), _Connection(clock, 1)]
    assert len(clock.tcpClients) == 2
    for round_number in range(3):
        for index, connection in enumerate(connections):
            assert connection.received().count(b"POST ") == 1
            connection.send(_ok())
            assert _result(calls[2 * round_number + index]).status == 200
    assert len(clock.tcpClients) == 2  # the other four reused the two connections
    assert t.in_flight == 0


def test_the_deferred_adapter_wraps_what_each_request_awaits() -> None:
    # Inside Synapse the adapter is make_deferred_yieldable, so that a login's log context survives the wait.
    clock = MemoryClock()
    adapted: List[Any] = []

    def adapter(d: "defer.Deferred[Any]") -> "defer.Deferred[Any]":
        adapted.append(d)
        return d.addCallback(lambda reply: reply._replace(body=b"adapted"))

    config = parse_config({"endpoint": MEMORY_ENDPOINT})
    t = Transport(config, reactor=cast(IReactorTime, clock), deferred_adapter=adapter)
    d = _start_post(t)
    assert len(adapted) == 1
    _Connection(clock, 0).send(_ok())
    assert _result(d).body == b"adapted"
    # Without one, the request's own Deferred is awaited as it is.
    d = _start_post(Transport(config, reactor=cast(IReactorTime, clock)))
    _Connection(clock, 1).send(_ok())
    assert _result(d).body == b'{"auth": {"success": true}}'


def test_a_timed_out_connection_is_not_reused() -> None:
    clock = MemoryClock()
    t = _memory(clock, timeout=0.5)
    d = _start_post(t)
    first = _Connection(clock, 0)
    clock.advance(0.5)
    assert _error(d) == "no complete answer within 0.5 s"
    assert first.transport.disconnecting
    d = _start_post(t)
    assert len(clock.tcpClients) == 2
    second = _Connection(clock, 1)
    assert second.received().startswith(b"POST ")
    second.send(_ok())
    assert _result(d).status == 200


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
                body = b'{"auth": {"success": true}}' if method == "POST" else json.dumps({"mxid": ALICE}).encode()
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
@ensure_deferred
async def test_password_check_read_then_dropped_on_a_kept_alive_connection_is_not_sent_again(
    dropping_server: _DroppingServer, make: TransportFactory
) -> None:
    t = make(endpoint=dropping_server.url)
    assert (await _post(t, dropping_server.url)).status == 200
    # The second check goes out on the kept-alive connection; the server reads
    # it (and could count it against a lockout policy), then closes.
    assert "connection closed before a reply" in await _post_fails(t, dropping_server.url)
    assert dropping_server.requests_for("POST") == [(1, 1), (1, 2)]
    assert dropping_server.connections == 1


@pytest.mark.parametrize("dropping_server", [{2}], indirect=True)
@ensure_deferred
async def test_lookup_read_then_dropped_on_a_kept_alive_connection_is_answered_by_a_retry(
    dropping_server: _DroppingServer, make: TransportFactory
) -> None:
    t = make(endpoint=dropping_server.url)
    assert (await _get(t, dropping_server.url)).status == 200
    assert (await _get(t, dropping_server.url)).status == 200
    # The dropped lookup reached the server; the retry went out on a new connection.
    assert dropping_server.requests_for("GET") == [(1, 1), (1, 2), (2, 1)]


@pytest.mark.parametrize("dropping_server", [{2}], indirect=True)
@ensure_deferred
async def test_lookup_retry_uses_a_new_connection_not_another_idle_one(
    dropping_server: _DroppingServer, make: TransportFactory
) -> None:
    # Two kept-alive connections, both of which drop their next request (as
    # after a restart of the server): the retry must not go out on the other.
    t = make(endpoint=dropping_server.url, max_concurrent_requests=4)
    first = [defer.ensureDeferred(_get(t, dropping_server.url)) for _ in range(2)]
    assert [r.status for r in await defer.gatherResults(first)] == [200, 200]
    assert dropping_server.connections == 2
    assert (await _get(t, dropping_server.url)).status == 200
    requests = dropping_server.requests_for("GET")
    assert sorted(requests[:2]) == [(1, 1), (2, 1)]
    assert requests[2][1] == 2  # read on a kept-alive connection, then dropped
    assert requests[3:] == [(3, 1)]


@pytest.mark.parametrize("dropping_server", [{1}], indirect=True)
@ensure_deferred
async def test_lookup_dropped_on_a_new_connection_is_not_retried(
    dropping_server: _DroppingServer, make: TransportFactory
) -> None:
    t = make(endpoint=dropping_server.url)
    with pytest.raises(BackendError, match="connection closed before a reply"):
        await _get(t, dropping_server.url)
    assert dropping_server.requests_for("GET") == [(1, 1)]


def _dead_connection() -> HTTP11ClientProtocol:
    """Returns an HTTP/1.1 client connection that Twisted already saw closed."""
    protocol = HTTP11ClientProtocol()
    protocol.connectionLost(Failure(ConnectionDone()))
    return protocol


@pytest.mark.parametrize("dropping_server", [set()], indirect=True)
@pytest.mark.parametrize("method", ["POST", "GET"])
@ensure_deferred
async def test_request_not_sent_is_retried_on_a_new_connection(
    dropping_server: _DroppingServer, make: TransportFactory, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    t = make(endpoint=dropping_server.url)
    pool: Any = t._pool
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
    reply = await (_post(t, dropping_server.url) if method == "POST" else _get(t, dropping_server.url))
    assert reply.status == 200
    assert len(handed_out) == 1
    assert dropping_server.requests_for(method) == [(1, 1)]


@pytest.mark.parametrize("dropping_server", [set()], indirect=True)
@ensure_deferred
async def test_request_not_sent_twice_gives_up(
    dropping_server: _DroppingServer, make: TransportFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = make(endpoint=dropping_server.url)
    pool: Any = t._pool
    handed_out: List[HTTP11ClientProtocol] = []

    def only_dead_connections(key: Any, endpoint: Any) -> Any:
        handed_out.append(_dead_connection())
        return defer.succeed(handed_out[-1])

    monkeypatch.setattr(pool, "getConnection", only_dead_connections)
    assert "RequestNotSent" in await _post_fails(t, dropping_server.url)
    assert len(handed_out) == 2
    assert dropping_server.requests == []


def _failed(exc_type: Any, reason: BaseException) -> BaseException:
    failed: BaseException = exc_type([Failure(reason)])
    return failed


@pytest.mark.parametrize(
    "exc, method, reused, expected",
    [
        (RequestNotSent(), "POST", True, True),
        (RequestNotSent(), "POST", False, True),
        (RequestNotSent(), "GET", True, True),
        (_failed(ResponseNeverReceived, ConnectionDone()), "POST", True, False),
        (_failed(ResponseNeverReceived, ConnectionDone()), "GET", True, True),
        (_failed(ResponseNeverReceived, ConnectionDone()), "GET", False, False),
        (_failed(ResponseFailed, ConnectionDone()), "GET", True, False),
        (ValueError(), "GET", True, False),
    ],
)
def test_retry_rule(exc: BaseException, method: str, reused: bool, expected: bool) -> None:
    assert _retryable(exc, method, reused) is expected


def test_no_retry_after_a_tls_failure() -> None:
    from OpenSSL import SSL

    assert _retryable(_failed(ResponseNeverReceived, SSL.Error()), "GET", True) is False


def test_an_http_1_0_connection_is_not_used_again() -> None:
    """A server speaking HTTP/1.0 closes the connection after each reply, and
    says nothing: Twisted's pool would keep it, and the next password check
    would meet a dead connection that a POST may not be retried on."""
    clock = MemoryClock()
    t = _memory(clock)
    first = _start_post(t)
    connection = _Connection(clock, 0)
    assert connection.received().startswith(b"POST ")
    body = b'{"auth": {"success": true}}'
    connection.send(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert _result(first).status == 200
    clock.advance(0)
    second = _start_post(t)
    assert len(clock.tcpClients) == 2  # a new connection, not the one the server is closing
    _Connection(clock, 1).send(_ok())
    assert _result(second).status == 200
    clock.advance(0)
    third = _start_post(t)
    assert len(clock.tcpClients) == 2  # an HTTP/1.1 connection is kept alive and reused
    assert not third.called
