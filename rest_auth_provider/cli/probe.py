"""Socket-level probes of the endpoint: DNS, TCP connect and TLS (certificate
subject and expiry). Blocking calls: this command does not run inside Synapse.

The TLS step is the module's own: the policy ``transport.tls_policy`` builds
from the config, run by Twisted's TLS protocol over the probe's socket, so that
``check`` and a login agree about every certificate.
"""

import datetime
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast
from urllib.parse import urlsplit

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from rest_auth_provider.cli.report import OK, WARN, Report, exception_text, format_ms
from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.safetext import printable
from rest_auth_provider.transport import HOST_NAME_ERRORS, tls_policy

CERT_EXPIRY_WARNING_DAYS = 14


class ProbeFailed(Exception):
    """A probe step failed; ``step`` names it, the message says why, ``details`` may help fix it."""

    def __init__(self, step: str, message: str, details: Sequence[str] = ()):
        super().__init__(message)
        self.step = step
        self.details = list(details)


class _DnsTimeout(Exception):
    pass


def _resolve(host: str, port: int, timeout: float) -> List[Any]:
    """Returns getaddrinfo's answer for a TCP connection, giving up after ``timeout`` seconds."""
    answer: List[Any] = []
    failure: List[BaseException] = []

    def work() -> None:
        try:
            answer.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as e:  # handed to the caller
            failure.append(e)

    worker = threading.Thread(target=work, name="dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _DnsTimeout()
    if failure:
        raise failure[0]
    return answer


def probe_dns(host: str, port: int, timeout: float, report: Report) -> List[Any]:
    """Returns the addresses to try; raises ProbeFailed when the name does not resolve."""
    started = time.monotonic()
    try:
        infos = _resolve(host, port, timeout)
    except _DnsTimeout:
        result = {"ok": False, "host": host, "error": "no answer within %g s" % timeout}
        report.data["probe"]["dns"] = result
        raise ProbeFailed("dns", "%s: no DNS answer within %g s" % (printable(host), timeout)) from None
    except (socket.gaierror, OSError) as e:
        reason = printable(e.strerror or str(e))
        report.data["probe"]["dns"] = {"ok": False, "host": host, "error": reason}
        raise ProbeFailed("dns", "%s: cannot be resolved (%s)" % (printable(host), reason)) from None
    elapsed = time.monotonic() - started
    addresses: List[str] = []
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    report.data["probe"]["dns"] = {"ok": True, "host": host, "addresses": addresses, "ms": round(elapsed * 1000, 1)}
    shown = ", ".join(printable(a) for a in addresses)
    report.line(OK, "dns", "%s -> %s (%s)" % (printable(host), shown, format_ms(elapsed)))
    return infos


def probe_tcp(infos: List[Any], port: int, timeout: float, report: Report) -> socket.socket:
    """Returns a connected socket to the first address that answers; raises ProbeFailed if none does."""
    reasons: List[str] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        started = time.monotonic()
        try:
            sock.connect(address)
        except socket.timeout:
            reasons.append("%s: no answer within %g s" % (address[0], timeout))
        except ConnectionRefusedError:
            reasons.append("%s: connection refused" % address[0])
        except OSError as e:
            reasons.append("%s: %s" % (address[0], printable(e.strerror or str(e))))
        else:
            elapsed = time.monotonic() - started
            report.data["probe"]["tcp"] = {
                "ok": True,
                "address": address[0],
                "port": port,
                "ms": round(elapsed * 1000, 1),
            }
            report.line(OK, "tcp", "connected to %s port %d in %s" % (address[0], port, format_ms(elapsed)))
            return sock
        sock.close()
    report.data["probe"]["tcp"] = {"ok": False, "port": port, "error": "; ".join(reasons)}
    raise ProbeFailed("tcp", "port %d: %s" % (port, "; ".join(reasons)))


def _certificate_facts(cert: Any) -> Dict[str, Any]:
    """Returns subject, issuer, names and expiry of a pyOpenSSL certificate (empty if there is none)."""
    if cert is None:
        return {}
    from cryptography import x509

    cert = cert.to_cryptography()
    not_after = getattr(cert, "not_valid_after_utc", None)
    if not_after is None:  # cryptography before 42
        not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    names: List[str] = []
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in alt.get_values_for_type(x509.DNSName)]
        names += [str(n) for n in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": int((not_after - now).total_seconds() // 86400),
    }


@implementer(IHandshakeListener)
class _Handshake(Protocol):
    """The probe's end of the TLS connection: sends nothing, notes whether the
    handshake completed and why the connection ended."""

    completed = False
    reason: Optional[Failure] = None

    def handshakeCompleted(self) -> None:
        self.completed = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason


class _OneProtocol(Factory):
    def __init__(self, protocol: Protocol):
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


class _SocketTransport:
    """A connected socket as the transport under Twisted's TLS protocol: what
    the protocol writes is sent at once; the caller feeds it what arrives.
    Blocking, which is fine here: this command never runs inside Synapse."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.closed = False
        self.error: Optional[OSError] = None

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._sock.sendall(data)
        except OSError as e:
            self.error = e
            self.closed = True

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.closed = True

    def abortConnection(self) -> None:
        self.closed = True


@implementer(IOpenSSLClientConnectionCreator)
class _KeptConnection:
    """Passes on the module's connection creator, keeping the connection it
    made: its verification result and the certificates the server presented
    are read from it after the handshake, failed or not."""

    def __init__(self, creator: Any):
        self._creator = creator
        self.connection: Any = None

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        self.connection = self._creator.clientConnectionForTLS(tls_protocol)
        return self.connection


def _handshake(sock: socket.socket, creator: Any, timeout: float) -> Tuple[_Handshake, Any]:
    """Returns the probe's end of the connection and the OpenSSL connection
    after a TLS handshake on ``sock`` through Twisted's TLS protocol, as
    ``wrapClientTLS`` runs it for the module's own connections.

    Raises socket.timeout when the handshake has not ended within ``timeout`` seconds.
    """
    kept = _KeptConnection(creator)
    handshake = _Handshake()
    tls = TLSMemoryBIOFactory(cast(Any, kept), True, cast(Any, _OneProtocol(handshake))).buildProtocol(None)
    transport = _SocketTransport(sock)
    deadline = time.monotonic() + timeout
    tls.makeConnection(cast(Any, transport))
    while not transport.closed and not handshake.completed:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise
        except OSError as e:
            transport.error = e
            break
        if not data:
            break
        tls.dataReceived(data)
    if transport.closed or not handshake.completed:
        # The TLS layer gives its own reason (the handshake's failure) if it has one.
        cause = (
            (transport.error.strerror or type(transport.error).__name__) if transport.error else "closed by the server"
        )
        tls.connectionLost(Failure(ConnectionLost(cause)))
    return handshake, kept.connection


def _verify_error(connection: Any) -> Optional[str]:
    """Returns OpenSSL's reason for refusing the server's certificate on
    ``connection``; None when it did not refuse it, or cannot be asked."""
    try:
        # pyOpenSSL has no public call for SSL_get_verify_result.
        from OpenSSL._util import ffi, lib

        code = lib.SSL_get_verify_result(connection._ssl)
        if code == 0:
            return None
        return str(ffi.string(lib.X509_verify_cert_error_string(code)).decode("ascii", "replace"))
    except Exception:  # pragma: no cover - only if pyOpenSSL's internals change
        return None


def _ssl_reasons(failure: Failure) -> List[str]:
    """Returns OpenSSL's reason strings of a failed handshake (empty if it was no TLS error)."""
    from OpenSSL import SSL

    args = failure.value.args if failure.check(SSL.Error) and failure.value is not None else ()
    if not args or not isinstance(args[0], list):
        return []
    return [str(e[-1]) for e in args[0] if isinstance(e, tuple) and e]


def _handshake_failure(failure: Failure, connection: Any, host: str, trust: str) -> Tuple[str, bool]:
    """Returns why the handshake failed, and whether it was the server's
    certificate (then the certificate it presented is worth showing)."""
    value = failure.value
    if failure.check(*HOST_NAME_ERRORS):
        # Worded as Python's ssl and OpenSSL put it.
        kind = "IP address" if isIPAddress(host) or isIPv6Address(host) else "Hostname"
        return "certificate not trusted by %s: %s mismatch, certificate is not valid for '%s'." % (
            trust,
            kind,
            printable(host),
        ), True
    reasons = _ssl_reasons(failure)
    verify_error = _verify_error(connection) if connection is not None else None
    if verify_error is not None or "certificate verify failed" in reasons:
        return "certificate not trusted by %s: %s" % (
            trust,
            printable(verify_error or "certificate verify failed"),
        ), True
    if reasons:
        return "TLS handshake failed (%s): does this port speak TLS?" % printable(", ".join(reasons)), False
    cause = value.args[0] if isinstance(value, ConnectionLost) and value.args and value.args[0] else None
    return "connection lost during the TLS handshake (%s)" % printable(cause or type(value).__name__), False


def probe_tls(sock: socket.socket, host: str, config: ProviderConfig, report: Report) -> None:
    """Verifies the server's certificate with the module's own TLS policy
    (``transport.tls_policy``: ``tls.ca_file`` or the system's CAs, the host
    name, ``tls.client_certificate``) over Twisted's TLS, exactly as a login
    connects; raises ProbeFailed when the handshake fails."""
    trust = "tls.ca_file %s" % printable(config.tls.ca_file) if config.tls.ca_file else "the system's CAs"
    port = sock.getpeername()[1]
    try:
        creator = tls_policy(config).creatorForNetloc(host.encode("ascii"), port)
    except Exception as e:  # the files changed since the config was read: OSError, ValueError, OpenSSL's errors
        sock.close()
        reason = "cannot load the TLS files: %s" % exception_text(e)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    started = time.monotonic()
    try:
        handshake, connection = _handshake(sock, creator, config.timeout)
    except socket.timeout:
        reason = "no TLS handshake within %g s" % config.timeout
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    if handshake.reason is not None:
        reason, about_certificate = _handshake_failure(handshake.reason, connection, host, trust)
        # The certificate the server presented in this same (refused) handshake, to help fix it.
        chain = connection.get_peer_cert_chain() if about_certificate and connection is not None else None
        facts = _certificate_facts(chain[0]) if chain else {}
        result: Dict[str, Any] = {"ok": False, "error": reason}
        if about_certificate:
            result["certificate"] = facts or None
        report.data["probe"]["tls"] = result
        details = _describe_certificate(facts)
        if details:
            details[0] = "the server presents: " + details[0]
        raise ProbeFailed("tls", reason, details)
    facts = _certificate_facts(connection.get_peer_certificate())
    version = connection.get_protocol_version_name()
    report.data["probe"]["tls"] = dict(
        ok=True, version=version, verified_with=trust, ms=round(elapsed * 1000, 1), certificate=facts
    )
    report.line(OK, "tls", "%s, certificate verified with %s (%s)" % (printable(version), trust, format_ms(elapsed)))
    if facts:
        subject, expiry = _describe_certificate(facts)
        report.line("", "tls", subject)
        report.line(WARN if facts["days_left"] < CERT_EXPIRY_WARNING_DAYS else OK, "tls", expiry)


def _describe_certificate(facts: Dict[str, Any]) -> List[str]:
    """Returns two lines about a certificate: who it names and who issued it, and when it expires.

    The names are the server's to choose: they are shown escaped."""
    if not facts:
        return []
    subject = printable(facts["subject"])
    issuer = "self-signed" if facts["issuer"] == facts["subject"] else "issued by %s" % printable(facts["issuer"])
    names = " for %s" % ", ".join(printable(n) for n in facts["names"]) if facts["names"] else ""
    days = facts["days_left"]
    return [
        "subject %s%s, %s" % (subject, names, issuer),
        "expires %s (%d day%s left)" % (facts["not_after"], days, "" if days in (1, -1) else "s"),
    ]


def probe_socket_level(config: ProviderConfig, report: Report) -> None:
    """Runs the DNS, TCP and TLS steps; raises ProbeFailed at the first failure."""
    parts = urlsplit(config.endpoint)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    infos = probe_dns(host, port, config.timeout, report)
    sock = probe_tcp(infos, port, config.timeout, report)
    if not https:
        sock.close()
        report.data["probe"]["tls"] = None
        report.line("", "tls", "not used (http:// endpoint)")
        return
    probe_tls(sock, host, config, report)
