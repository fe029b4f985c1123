"""Socket-level probes of the endpoint: DNS, TCP connect and TLS (certificate
subject and expiry). Blocking stdlib calls: this command does not run inside Synapse."""

import datetime
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import urlsplit

from rest_auth_provider.cli.report import OK, WARN, Report, exception_text, format_ms
from rest_auth_provider.config import ProviderConfig
from rest_auth_provider.safetext import printable

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


def _certificate_facts(der: Optional[bytes]) -> Dict[str, Any]:
    """Returns subject, issuer, names and expiry of a DER certificate (empty if there is none)."""
    if not der:
        return {}
    from cryptography import x509
    from cryptography.hazmat.backends import default_backend

    cert = x509.load_der_x509_certificate(der, default_backend())
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


def _tls_context(config: ProviderConfig) -> ssl.SSLContext:
    """Returns a verifying client context: the configured CA instead of the system's, as the module does."""
    if config.tls.ca_file:
        context = ssl.create_default_context(cafile=config.tls.ca_file)
    else:
        context = ssl.create_default_context()
    if config.tls.client_certificate:
        # A callback, so that an encrypted key fails instead of prompting (the module cannot use one either).
        context.load_cert_chain(config.tls.client_certificate, config.tls.client_key, password=lambda: b"")
    return context


def _presented_certificate(family: int, address: Any, host: str, timeout: float) -> Dict[str, Any]:
    """Returns the facts of the certificate the server presents, without verifying it (for diagnosis only)."""
    # Only after a verified handshake failed, to show the admin which
    # certificate the server presents. Nothing is sent over this connection:
    # the handshake is read and the socket closed. The module itself always
    # verifies (transport.py); there is no option to turn that off.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(address)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return _certificate_facts(tls.getpeercert(binary_form=True))
    except (OSError, ValueError):
        return {}


def probe_tls(sock: socket.socket, host: str, config: ProviderConfig, report: Report) -> None:
    """Verifies the server's certificate as the module would; raises ProbeFailed when it is not trusted."""
    trust = "tls.ca_file %s" % printable(config.tls.ca_file) if config.tls.ca_file else "the system's CAs"
    family, peer = sock.family, sock.getpeername()
    try:
        context = _tls_context(config)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        sock.close()
        reason = "cannot load the TLS files: %s" % exception_text(e)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    started = time.monotonic()
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            elapsed = time.monotonic() - started
            facts = _certificate_facts(tls.getpeercert(binary_form=True))
            version = tls.version()
    except ssl.SSLCertVerificationError as e:
        facts = _presented_certificate(family, peer, host, config.timeout)
        reason = "certificate not trusted by %s: %s" % (trust, printable(str(e.verify_message or e.reason)))
        report.data["probe"]["tls"] = {"ok": False, "error": reason, "certificate": facts or None}
        details = _describe_certificate(facts)
        if details:
            details[0] = "the server presents: " + details[0]
        raise ProbeFailed("tls", reason, details) from None
    except ssl.SSLError as e:
        reason = "TLS handshake failed (%s): does this port speak TLS?" % printable(str(e.reason or e))
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    except socket.timeout:
        reason = "no TLS handshake within %g s" % config.timeout
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    except OSError as e:
        reason = "connection lost during the TLS handshake (%s)" % printable(e.strerror or type(e).__name__)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise ProbeFailed("tls", reason) from None
    finally:
        sock.close()
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
