"""The HTTP client that talks to ma1sd.

Non-blocking (Twisted's Agent on Synapse's reactor), with one deadline per call
that covers waiting for a free slot, connecting, TLS, headers and body; a cap
on the reply size; a cap on concurrent requests; redirects never followed;
TLS always verified; a request sent twice only when the first provably never
left the client, or is an idempotent lookup. Request bodies are never logged:
they hold passwords.
"""

import json
import logging
from typing import Any, Dict, List, Optional, Tuple, cast
from urllib.parse import urlencode

from twisted.internet import defer, error, ssl
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent  # not exported by twisted.web.client
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from rest_auth_provider import __version__, metrics
from rest_auth_provider._compat import make_deferred_yieldable
from rest_auth_provider.config import ProviderConfig, read_header_file
from rest_auth_provider.response import (
    AuthReply,
    MalformedReply,
    decode_json,
    parse_check_credentials,
    parse_lookup,
)
from rest_auth_provider.safetext import shown_url

logger = logging.getLogger(__name__)

# Idle connections are dropped well before common server-side keep-alive
# limits (nginx: 75 s), so a reused connection is rarely stale.
_IDLE_CONNECTION_SECONDS = 30


_RESPONSE_DONE = Failure(ResponseDone())


class BackendError(Exception):
    """ma1sd could not be asked or gave no usable answer; ``str()`` says why."""


class _TooLarge(Exception):
    pass


class _Deadline:
    """Set once a call has run out of time, so that nothing retries it."""

    expired = False


class _BodyCollector(Protocol):
    """Collects a response body, giving up once it exceeds ``limit`` bytes."""

    def __init__(self, limit: int):
        self._limit = limit
        self._parts: List[bytes] = []
        self._size = 0
        self.finished: defer.Deferred[bytes] = defer.Deferred(canceller=self._cancel)

    def _cancel(self, _: "defer.Deferred[bytes]") -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.finished.errback(Failure(_TooLarge()))
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = _RESPONSE_DONE) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._parts))
        else:
            self.finished.errback(reason)


@implementer(IPolicyForHTTPS)
class _VerifyingTlsPolicy:
    """Verifies the server certificate against the system CAs or ``ca_file``,
    and presents a client certificate when one is configured."""

    def __init__(self, trust_root: Any, client_certificate: Optional[ssl.PrivateCertificate]):
        self._trust_root = trust_root
        self._client_certificate = client_certificate

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust_root,
            clientCertificate=self._client_certificate,
        )


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tls_policy(config: ProviderConfig) -> _VerifyingTlsPolicy:
    """Returns the TLS policy; reads certificate files (at start-up only)."""
    trust_root: Any = ssl.platformTrust()
    if config.tls.ca_file:
        pem = _read_file(config.tls.ca_file)
        marker = b"-----BEGIN CERTIFICATE-----"
        certs = [ssl.Certificate.loadPEM(marker + chunk) for chunk in pem.split(marker)[1:]]
        if not certs:
            raise ValueError("no PEM certificate in %s" % config.tls.ca_file)
        trust_root = ssl.trustRootFromCertificates(certs)
    client_certificate = None
    if config.tls.client_certificate:
        pem = _read_file(config.tls.client_certificate)
        if config.tls.client_key:
            pem += b"\n" + _read_file(config.tls.client_key)
        client_certificate = ssl.PrivateCertificate.loadPEM(pem)
    return _VerifyingTlsPolicy(trust_root, client_certificate)


def _describe_failure(exc: BaseException, timeout: float) -> str:
    """Returns a short, secret-free reason for a failed exchange."""
    if isinstance(exc, defer.TimeoutError):
        return "no complete answer within %g s" % timeout
    if isinstance(exc, _TooLarge):
        return "reply too large"
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, error.DNSLookupError):
        return "host name not found"
    if isinstance(exc, error.TimeoutError):
        return "connection timed out"
    reasons = getattr(exc, "reasons", None)
    if reasons:
        for reason in reasons:
            if _is_tls_failure(reason):
                return "TLS handshake failed (certificate not trusted or wrong host name?)"
        if type(exc).__name__ == "ResponseFailed":
            return "connection closed before the reply was complete"
        return "connection closed before a reply (%s)" % type(exc).__name__
    if isinstance(exc, error.ConnectError):
        return "cannot connect (%s)" % type(exc).__name__
    return "unexpected error (%s)" % type(exc).__name__


def _is_tls_failure(reason: Failure) -> bool:
    from OpenSSL import SSL

    return bool(reason.check(SSL.Error))


def _retryable(exc: BaseException, method: bytes, reused_connection: bool) -> bool:
    """Returns True when a failed request may be sent once more, on a new
    connection.

    A request is sent twice only when the first one provably never left the
    client (Twisted's RequestNotSent: the connection was found closed before
    anything was written), or when it is an idempotent GET (the 3PID lookup,
    no password) that failed on a kept-alive connection the server had
    closed. A POST that may have reached the server is never sent again: a
    server that read a password check and then dropped the connection has
    counted it, and a second check could count twice against an LDAP
    lockout policy."""
    if isinstance(exc, RequestNotSent):
        return True
    if method != b"GET" or not reused_connection:
        return False
    if not isinstance(exc, (ResponseNeverReceived, RequestTransmissionFailed)):
        return False
    return not any(_is_tls_failure(r) for r in exc.reasons)


class _TrackingPool(HTTPConnectionPool):
    """A connection pool that tells whether its last connection was new, and
    hands out a new one when ``want_new`` is set (for the next call only)."""

    last_was_new = False
    want_new = False

    def getConnection(self, key: Any, endpoint: Any) -> Any:
        self.last_was_new = False
        if self.want_new:
            self.want_new = False
            return self._newConnection(key, endpoint)
        return super().getConnection(key, endpoint)

    def _newConnection(self, key: Any, endpoint: Any) -> Any:
        self.last_was_new = True
        return super()._newConnection(key, endpoint)


class _RequestFailed(Exception):
    """Carries a failure and whether it happened on a reused connection."""

    def __init__(self, cause: BaseException, reused_connection: bool):
        super().__init__(cause)
        self.cause = cause
        self.reused_connection = reused_connection


class Ma1sdClient:
    """Asks ma1sd about credentials and 3PIDs."""

    def __init__(self, config: ProviderConfig, reactor: Optional[IReactorTime] = None):
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor  # type: ignore[assignment]
        self._reactor: Any = reactor
        self._config = config
        self._timeout = config.timeout
        self._pool = _TrackingPool(self._reactor, persistent=True)
        self._pool.maxPersistentPerHost = config.max_concurrent_requests
        self._pool.cachedConnectionTimeout = _IDLE_CONNECTION_SECONDS
        self._pool.retryAutomatically = False
        self._agent = Agent(
            self._reactor,
            contextFactory=_tls_policy(config),
            pool=self._pool,
            connectTimeout=config.timeout,
        )
        self._slots = defer.DeferredSemaphore(config.max_concurrent_requests)
        self._headers: Dict[bytes, List[bytes]] = {
            b"User-Agent": [b"rest_auth_provider/" + __version__.encode("ascii")],
            b"Accept": [b"application/json"],
        }
        for name, value in config.headers:
            self._headers[name.encode("ascii")] = [value.encode("utf-8")]
        for name, path in config.header_files:
            # Read again here: the file may have changed since the config was checked.
            self._headers[name.encode("ascii")] = [read_header_file(path).encode("ascii")]

    @property
    def in_flight(self) -> int:
        """Returns how many requests hold a slot right now."""
        return self._config.max_concurrent_requests - self._slots.tokens

    async def check_credentials(self, user_id: str, password: str) -> AuthReply:
        """Returns ma1sd's verdict on ``password`` for ``user_id``.

        Raises BackendError when ma1sd cannot be asked or its reply is unusable.
        """
        body = json.dumps({"user": {"id": user_id, "password": password}}).encode("utf-8")
        value = await self._call("check_credentials", b"POST", self._config.check_credentials_url, body)
        try:
            return parse_check_credentials(value)
        except MalformedReply as e:
            raise BackendError(str(e)) from None

    async def lookup_threepid(self, medium: str, address: str) -> Optional[str]:
        """Returns the Matrix ID ma1sd maps this 3PID to, or None if it knows none.

        Raises BackendError when ma1sd cannot be asked or its reply is unusable.
        """
        query = urlencode({"medium": medium, "address": address})
        value = await self._call("lookup", b"GET", self._config.lookup_url + "?" + query, None)
        try:
            return parse_lookup(value)
        except MalformedReply as e:
            raise BackendError(str(e)) from None

    async def request_raw(
        self, label: str, method: bytes, url: str, body: Optional[bytes]
    ) -> Tuple[int, Headers, bytes]:
        """Returns (status, headers, body) of any complete reply, whatever its status.

        Raises BackendError when there is no complete reply within the timeout.
        ``label`` names the call in the duration metric.
        """
        started = self._reactor.seconds()
        deadline = _Deadline()
        d = defer.ensureDeferred(self._exchange(method, url, body, deadline))

        def expire() -> None:
            deadline.expired = True
            d.cancel()

        timer = self._reactor.callLater(self._timeout, expire)
        try:
            status, headers, data = await make_deferred_yieldable(d)
        except Exception as e:
            logger.debug(
                "%s %s failed after %.0f ms: %r", method.decode(), shown_url(url), self._elapsed_ms(started), e
            )
            if deadline.expired:
                raise BackendError("no complete answer within %g s" % self._timeout) from None
            raise BackendError(_describe_failure(e, self._timeout)) from None
        finally:
            if timer.active():
                timer.cancel()
            metrics.backend_request_duration.labels(endpoint=label).observe(self._elapsed_ms(started) / 1000)
        logger.debug(
            "%s %s -> HTTP %d, %d bytes in %.0f ms",
            method.decode(),
            shown_url(url),
            status,
            len(data),
            self._elapsed_ms(started),
        )
        return status, headers, data

    async def _call(self, label: str, method: bytes, url: str, body: Optional[bytes]) -> Any:
        """Returns the decoded JSON of a 2xx reply; raises BackendError otherwise."""
        status, headers, data = await self.request_raw(label, method, url, body)
        if 300 <= status < 400:
            location = headers.getRawHeaders(b"location", [b"?"])[0].decode("latin-1")
            raise BackendError("HTTP %d redirect to %s not followed (check 'endpoint')" % (status, shown_url(location)))
        if not 200 <= status < 300:
            raise BackendError("HTTP %d" % status)
        try:
            return decode_json(data)
        except MalformedReply as e:
            raise BackendError(str(e)) from None

    def _elapsed_ms(self, started: float) -> float:
        return float((self._reactor.seconds() - started) * 1000)

    async def _exchange(
        self, method: bytes, url: str, body: Optional[bytes], deadline: "_Deadline"
    ) -> Tuple[int, Headers, bytes]:
        await self._slots.acquire()
        try:
            for attempt in (1, 2):
                try:
                    return await self._request_once(method, url, body, new_connection=attempt == 2)
                except _RequestFailed as e:
                    if attempt == 2 or deadline.expired or not _retryable(e.cause, method, e.reused_connection):
                        raise e.cause from None
                    logger.debug("%s %s retried on a new connection: %r", method.decode(), shown_url(url), e.cause)
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    async def _request_once(
        self, method: bytes, url: str, body: Optional[bytes], new_connection: bool = False
    ) -> Tuple[int, Headers, bytes]:
        """Returns (status, headers, body) of one exchange, on a new connection
        if ``new_connection``; raises _RequestFailed when no reply arrived."""
        headers = Headers(dict(self._headers))
        producer = None
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = cast(IBodyProducer, _BytesProducer(body))
        # The Agent picks the connection synchronously, so the pool knows now.
        self._pool.want_new = new_connection
        try:
            requested = self._agent.request(method, url.encode("ascii"), headers, producer)
        finally:
            self._pool.want_new = False
        reused = not self._pool.last_was_new
        try:
            response: Any = await requested
        except Exception as e:
            raise _RequestFailed(e, reused) from None
        if isinstance(response.length, int) and response.length > self._config.max_response_size:
            response.deliverBody(_Discard())
            raise _TooLarge()
        collector = _BodyCollector(self._config.max_response_size)
        response.deliverBody(collector)
        data = await collector.finished
        return response.code, response.headers, data

    async def close(self) -> None:
        """Closes idle connections (used by tests and the CLI)."""
        await self._pool.closeCachedConnections()


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _RESPONSE_DONE) -> None:
        pass


@implementer(IBodyProducer)
class _BytesProducer:
    """Writes a small request body in one go."""

    def __init__(self, body: bytes):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> "defer.Deferred[None]":
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
