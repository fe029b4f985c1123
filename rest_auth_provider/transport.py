"""The HTTP transport both backends share: treq's ``HTTPClient`` over the
module's own Agent, connection pool and TLS policy.

treq builds the request (query string, headers, body); this module adds what
treq cannot do: one deadline per call that covers waiting for a free slot,
connecting, TLS, headers and the whole body (treq's ``timeout=`` ends at the
headers, and ``treq.collect`` cannot be cancelled); a cap on the reply size; a
cap on concurrent requests; a request sent twice only when the first provably
never left the client, or is an idempotent GET on a stale kept-alive
connection. Redirects are never followed, no cookie is ever kept, TLS is always
verified. Request bodies are never logged: they hold passwords.
"""

import json
import logging
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Type, cast

import treq.client
from hyperlink import URL as _HyperlinkURL
from treq.client import HTTPClient
from twisted.internet import defer, error, ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent  # not exported by twisted.web.client
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from rest_auth_provider import __version__, metrics
from rest_auth_provider.config import ProviderConfig, read_header_file
from rest_auth_provider.response import MalformedReply, decode_json
from rest_auth_provider.safetext import shown_url

logger = logging.getLogger(__name__)

# Wraps the Deferred of each request before it is awaited: inside Synapse,
# make_deferred_yieldable (so that log contexts stay right); elsewhere nothing.
DeferredAdapter = Callable[["defer.Deferred[Any]"], "defer.Deferred[Any]"]

try:  # Twisted checks the server's name with service_identity (Synapse requires it).
    from service_identity import VerificationError

    # What a handshake fails with when the certificate is not for the host.
    HOST_NAME_ERRORS: Tuple[Type[Exception], ...] = (VerificationError,)
except ImportError:  # pragma: no cover - Twisted then skips the name check, and says so
    HOST_NAME_ERRORS = ()

# Idle connections are dropped well before common server-side keep-alive
# limits (nginx: 75 s), so a reused connection is rarely stale.
_IDLE_CONNECTION_SECONDS = 30


_RESPONSE_DONE = Failure(ResponseDone())


class BackendError(Exception):
    """The backend could not be asked or gave no usable answer; ``str()`` says
    why, names nothing secret and is safe to log."""


class HttpReply(NamedTuple):
    """A complete reply, whatever its status."""

    status: int
    headers: Headers
    body: bytes


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def decode_reply(reply: HttpReply, accept: Callable[[int], bool] = _is_2xx) -> Any:
    """Returns the decoded JSON of a reply whose status ``accept`` allows (2xx
    by default).

    Raises BackendError for a redirect (never followed), another status, or a
    body that is not strict JSON.
    """
    if 300 <= reply.status < 400:
        location = reply.headers.getRawHeaders(b"location", [b"?"])[0].decode("latin-1")
        raise BackendError(
            "HTTP %d redirect to %s not followed (check 'endpoint')" % (reply.status, shown_url(location))
        )
    if not accept(reply.status):
        raise BackendError("HTTP %d" % reply.status)
    try:
        return decode_json(reply.body)
    except MalformedReply as e:
        raise BackendError(str(e)) from None


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
            self.transport.stopProducing()

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


class _Discard(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _RESPONSE_DONE) -> None:
        pass


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


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Makes the endpoint for a scheme, host and port once and keeps it.

    Twisted's Agent makes a new one for every request, even for one that then
    goes out on a pooled connection, and for https a new TLS context with it
    (the trust root loaded again): CPU on every login for nothing."""

    _MAX = 16  # the config names one or two hosts; more only through odd callers

    def __init__(self, reactor: Any, tls_policy: Any, connect_timeout: float):
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._connect_timeout = connect_timeout
        self._endpoints: Dict[Any, Any] = {}

    def endpointForURI(self, uri: URI) -> Any:
        """Returns the endpoint for ``uri``'s scheme, host and port."""
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._new_endpoint(uri)
            if len(self._endpoints) >= self._MAX:
                self._endpoints.clear()
            self._endpoints[key] = endpoint
        return endpoint

    def _new_endpoint(self, uri: URI) -> Any:
        host = uri.host.decode("ascii")
        endpoint: Any = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._connect_timeout)
        if uri.scheme == b"https":
            return wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port), endpoint)
        if uri.scheme != b"http":
            raise SchemeNotSupported("unsupported scheme %r" % uri.scheme)
        return endpoint


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tls_policy(config: ProviderConfig) -> _VerifyingTlsPolicy:
    """Returns the TLS policy of ``config``'s ``tls`` section, which every https
    connection of the module and of ``check`` uses; reads the certificate
    files (at start-up only).

    Raises OSError, ValueError or OpenSSL's errors when a file cannot be used.
    """
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

    return bool(reason.check(SSL.Error, *HOST_NAME_ERRORS))


def _retryable(exc: BaseException, method: str, reused_connection: bool) -> bool:
    """Returns True when a failed request may be sent once more, on a new
    connection.

    A request is sent twice only when the first one provably never left the
    client (Twisted's RequestNotSent: the connection was found closed before
    anything was written), or when it is an idempotent GET (a 3PID lookup,
    no password) that failed on a kept-alive connection the server had
    closed. A POST that may have reached the server is never sent again: a
    server that read a password check and then dropped the connection has
    counted it, and a second check could count twice against an LDAP
    lockout policy."""
    if isinstance(exc, RequestNotSent):
        return True
    if method != "GET" or not reused_connection:
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


def _keeps_alive(response: Any) -> bool:
    """Returns False when the reply is HTTP/1.0: such a server closes the
    connection after the reply unless both sides negotiated keep-alive, which
    Twisted does not do (and its ``Connection`` header never reaches us)."""
    return not response.version or tuple(response.version[1:3]) >= (1, 1)


class _RequestFailed(Exception):
    """Carries a failure and whether it happened on a reused connection."""

    def __init__(self, cause: BaseException, reused_connection: bool):
        super().__init__(cause)
        self.cause = cause
        self.reused_connection = reused_connection


@implementer(IBodyProducer)
class _BytesProducer:
    """Writes a request body in one go, as the headers are written.

    treq's default for bytes, a FileBodyProducer, writes the body one reactor
    iteration after the headers through a Cooperator: about 10 µs more CPU
    per request (bench/transport_cpu.py), and the headers may leave in a
    segment of their own."""

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


class _NoCookies(CookieJar):
    """A cookie jar that never keeps or sends a cookie: a session cookie set
    for one user's password check must never ride along on another's."""

    def __init__(self) -> None:
        super().__init__(DefaultCookiePolicy(allowed_domains=[]))

    def add_cookie_header(self, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any) -> None:
        pass

    def __bool__(self) -> bool:
        # treq before 22.1 replaced an empty (false) jar by one of its own that keeps cookies.
        return True


@implementer(IAgent)
class _IdentityEncodingAgent:
    """Asks for and reads replies as sent, never compressed.

    treq wraps every agent in a ContentDecoderAgent, which asks for gzip and
    inflates a gzip reply before our body collector sees it: the size cap
    would then count inflated bytes only after each network read was inflated
    whole (64 KiB can inflate to 64 MiB). So the ``Accept-Encoding`` it adds is
    taken out again, and a reply's ``Content-Encoding`` is dropped before it
    sees it: a compressed reply reaches the JSON decoder as it came, and fails
    there ("not UTF-8" or "not JSON"), as before treq."""

    def __init__(self, agent: Any):
        self._agent = agent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Optional[Headers] = None,
        bodyProducer: Any = None,
    ) -> "defer.Deferred[Any]":
        if headers is not None:
            headers.removeHeader(b"accept-encoding")  # a copy of the caller's, made by treq
        requested: defer.Deferred[Any] = self._agent.request(method, uri, headers, bodyProducer)
        return requested.addCallback(_keep_encoded)


def _keep_encoded(response: Any) -> Any:
    response.headers.removeHeader(b"content-encoding")
    return response


# From 21.1, treq keeps an EncodedURL it is given and percent-encodes
# ``params`` itself (``_query_quote``); earlier releases get text.
_TREQ_TAKES_URL_OBJECTS = hasattr(treq.client, "_query_quote")
_MAX_CACHED_URLS = 16  # the config has two or three URLs; more only through odd callers


class _AsciiUrl(_HyperlinkURL):
    """A URL that treq sends as it is.

    treq re-encodes every URL it is given through hyperlink (``to_uri``: IDNA
    for the host name, percent-encoding for the rest), which costs more CPU
    than all the rest of treq's work on a request. The URLs here are ASCII
    already (the config refuses anything else) and treq percent-encodes
    ``params`` itself, so there is nothing left to encode."""

    def to_uri(self) -> "_AsciiUrl":
        return self

    def to_text(self, with_password: bool = False) -> str:
        # Hyperlink URLs are immutable: the text is worked out once per URL.
        if with_password:
            return super().to_text(with_password)
        text: Optional[str] = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = super().to_text()
        return text


def _unchanged(d: "defer.Deferred[Any]") -> "defer.Deferred[Any]":
    return d


class Transport:
    """Sends HTTP requests to the backend; shared by both backends.

    ``deferred_adapter`` wraps each request's Deferred before it is awaited
    (Synapse passes its ``make_deferred_yieldable``); None leaves it as it is.
    """

    def __init__(
        self,
        config: ProviderConfig,
        reactor: Optional[IReactorTime] = None,
        *,
        deferred_adapter: Optional[DeferredAdapter] = None,
    ) -> None:
        self._yieldable: DeferredAdapter = deferred_adapter or _unchanged
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor: Any = reactor
        self._config = config
        self._timeout = config.timeout
        self._pool = _TrackingPool(self._reactor, persistent=True)
        self._pool.maxPersistentPerHost = config.max_concurrent_requests
        self._pool.cachedConnectionTimeout = _IDLE_CONNECTION_SECONDS
        self._pool.retryAutomatically = False
        agent = Agent.usingEndpointFactory(
            self._reactor, _Endpoints(self._reactor, tls_policy(config), config.timeout), pool=self._pool
        )
        self._http = HTTPClient(
            cast(Any, _IdentityEncodingAgent(agent)),
            cookiejar=cast(Any, _NoCookies()),
            data_to_body_producer=cast(Any, _BytesProducer),
        )
        self._urls: Dict[str, Any] = {}
        self._slots = defer.DeferredSemaphore(config.max_concurrent_requests)
        headers = Headers(
            {
                b"User-Agent": [b"rest_auth_provider/" + __version__.encode("ascii")],
                b"Accept": [b"application/json"],
            }
        )
        for name, value in config.headers:
            headers.setRawHeaders(name.encode("ascii"), [value.encode("utf-8")])
        for name, path in config.header_files:
            # Read again here: the file may have changed since the config was checked.
            headers.setRawHeaders(name.encode("ascii"), [read_header_file(path).encode("ascii")])
        # Built once and handed to treq as they are: the agents it wraps ours in
        # copy them before adding anything (test_headers_given_to_treq_stay_as_built).
        self._headers = headers
        self._json_headers = headers.copy()
        self._json_headers.setRawHeaders(b"Content-Type", [b"application/json"])
        self._durations: Dict[str, Any] = {}

    def _treq_url(self, url: str) -> Any:
        """Returns ``url`` as treq should get it: parsed once, sent as it is."""
        if not _TREQ_TAKES_URL_OBJECTS:
            return url
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _MAX_CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = _AsciiUrl.from_text(url)
        return parsed

    @property
    def in_flight(self) -> int:
        """Returns how many requests hold a slot right now."""
        return self._config.max_concurrent_requests - self._slots.tokens

    async def request(
        self,
        label: str,
        method: str,
        url: str,
        json_body: Any = None,
        params: Optional[Mapping[str, str]] = None,
    ) -> HttpReply:
        """Returns any complete reply, whatever its status: ``json_body`` (if
        not None) sent as JSON, ``params`` as the query string.

        Raises BackendError when there is no complete reply within the timeout.
        ``label`` names the call in the duration metric.
        """
        body = None if json_body is None else json.dumps(json_body).encode("utf-8")
        started = self._reactor.seconds()
        deadline = _Deadline()
        d = defer.ensureDeferred(self._exchange(method, url, body, params, deadline))

        def expire() -> None:
            deadline.expired = True
            d.cancel()

        timer = self._reactor.callLater(self._timeout, expire)
        try:
            reply: HttpReply = await self._yieldable(d)
        except Exception as e:
            logger.debug("%s %s failed after %.0f ms: %r", method, shown_url(url), self._elapsed_ms(started), e)
            if deadline.expired:
                raise BackendError("no complete answer within %g s" % self._timeout) from None
            raise BackendError(_describe_failure(e, self._timeout)) from None
        finally:
            if timer.active():
                timer.cancel()
            self._duration(label).observe(self._elapsed_ms(started) / 1000)
        if logger.isEnabledFor(logging.DEBUG):  # shown_url costs more than the check below
            logger.debug(
                "%s %s -> HTTP %d, %d bytes in %.0f ms",
                method,
                shown_url(url),
                reply.status,
                len(reply.body),
                self._elapsed_ms(started),
            )
        return reply

    def _duration(self, label: str) -> Any:
        """Returns the duration histogram for ``label``."""
        histogram = self._durations.get(label)
        if histogram is None:
            histogram = self._durations[label] = metrics.backend_request_duration.labels(endpoint=label)
        return histogram

    def _elapsed_ms(self, started: float) -> float:
        return float((self._reactor.seconds() - started) * 1000)

    async def _exchange(
        self,
        method: str,
        url: str,
        body: Optional[bytes],
        params: Optional[Mapping[str, str]],
        deadline: _Deadline,
    ) -> HttpReply:
        await self._slots.acquire()
        try:
            for attempt in (1, 2):
                try:
                    return await self._request_once(method, url, body, params, new_connection=attempt == 2)
                except _RequestFailed as e:
                    if attempt == 2 or deadline.expired or not _retryable(e.cause, method, e.reused_connection):
                        raise e.cause from None
                    logger.debug("%s %s retried on a new connection: %r", method, shown_url(url), e.cause)
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    async def _request_once(
        self,
        method: str,
        url: str,
        body: Optional[bytes],
        params: Optional[Mapping[str, str]],
        new_connection: bool = False,
    ) -> HttpReply:
        """Returns one complete reply, on a new connection if ``new_connection``;
        raises _RequestFailed when no reply arrived."""
        # The Agent picks the connection synchronously, so the pool knows now.
        self._pool.want_new = new_connection
        try:
            requested = self._http.request(
                method,
                self._treq_url(url),
                headers=self._headers if body is None else self._json_headers,
                data=body,
                params=dict(params) if params else None,
                allow_redirects=False,
                unbuffered=True,
            )
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
        if not _keeps_alive(response):
            # Twisted's pool keeps an HTTP/1.0 connection the server is about
            # to close (it only looks for "Connection: close"): the next
            # request would meet a dead connection and, being a POST, could
            # not be sent again. Drop it once the pool has taken it back.
            self._reactor.callLater(0, self._pool.closeCachedConnections)
        return HttpReply(response.code, response.headers, data)

    async def close(self) -> None:
        """Closes idle connections (used by tests and the CLI)."""
        await self._pool.closeCachedConnections()
