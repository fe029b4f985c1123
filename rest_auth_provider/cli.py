"""``rest-auth-provider check``: checks a homeserver's configuration of the
module and the path to ma1sd, without Synapse running and without writing
anything anywhere.

1. Reads the ``-c`` files the way Synapse does (a directory means its ``*.yaml``
   files in sorted order; a later file's top-level keys replace earlier ones),
   finds the module's block under ``modules:`` or ``password_providers:``,
   validates its ``config:`` with the module's own parser and shows the
   effective settings, defaults included. Warns when Synapse's local password
   database is still on (the "back door").
2. Probes the endpoint: DNS, TCP connect, TLS (certificate subject and expiry),
   then a ``check_credentials`` call for a made-up user that cannot exist.
3. With ``--user``: asks ma1sd about that user's password (read without echo,
   or from stdin) and shows what a login would do: accepted or not, display
   name, 3PIDs. The password is never printed or logged.

Exit codes:

====  ==========================================================================
0     all good (warnings do not change it)
1     unexpected error (a bug: please report it with the traceback)
2     configuration error: a file missing or not YAML, the module's block
      missing, listed twice or invalid, a certificate or header file unreadable
3     ma1sd unreachable or not answering like ma1sd: DNS, TCP, TLS or HTTP
      failure, timeout, a reply that is not ma1sd's
4     credentials refused (only with ``--user``)
64    usage error (unknown option, missing ``-c``), as ``EX_USAGE`` of sysexits.h
130   interrupted (Ctrl-C)
====  ==========================================================================

``--json`` prints one JSON object instead of the text (see docs/check.md).
"""

import argparse
import datetime
import getpass
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import yaml
from twisted.internet import defer, task

from rest_auth_provider import __version__
from rest_auth_provider.client import BackendError, Ma1sdClient
from rest_auth_provider.config import ProviderConfig, parse_config
from rest_auth_provider.response import (
    AuthReply,
    MalformedReply,
    canonical_threepid,
    decode_json,
    parse_check_credentials,
)
from rest_auth_provider.users import LocalRefusal, parse_login_name

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_BACKEND = 3
EXIT_REFUSED = 4
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130

EXIT_MEANINGS = {
    EXIT_OK: "all good",
    EXIT_CONFIG: "configuration error",
    EXIT_BACKEND: "ma1sd unreachable or not answering like ma1sd",
    EXIT_REFUSED: "credentials refused",
}

MODULE_NAME = "rest_auth_provider.RestAuthProvider"
SECTIONS = ("modules", "password_providers")
# A user that cannot exist anywhere (".invalid" is reserved, RFC 2606) and a
# password that is no one's secret: the probe asks ma1sd about them.
PROBE_USER_ID = "@rest-auth-provider-check:invalid"
PROBE_PASSWORD = "x"
CERT_EXPIRY_WARNING_DAYS = 14
MODULES_SINCE = (1, 46)

logger = logging.getLogger("rest_auth_provider.cli")  # not __name__: "__main__" with python -m

OK = "OK"
WARN = "WARN"
FAIL = "FAIL"


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit with 64 so they never collide with the check's own codes."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: error: %s\n" % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    """Returns the command line parser."""
    parser = _ArgumentParser(
        prog="rest-auth-provider",
        description="Tools for the rest_auth_provider Synapse module (%s)." % __version__,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check",
        help="check the configuration and the connection to ma1sd (writes nothing)",
        description="Checks the module's configuration in Synapse's config files and the connection to ma1sd; "
        "with --user, also one user's credentials. Writes nothing anywhere. Exit codes: 0 all good, "
        "2 configuration error, 3 ma1sd unreachable or not answering like ma1sd, 4 credentials refused, "
        "64 usage error.",
    )
    check.add_argument(
        "-c",
        "--config-path",
        dest="config_paths",
        action="append",
        required=True,
        metavar="PATH",
        help="a Synapse config file, or a directory of *.yaml files; repeat as for Synapse (later files win)",
    )
    check.add_argument("--user", metavar="NAME", help="also check this user's password (user name or @user:server)")
    check.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (the default when stdin is not a terminal)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument(
        "-v", "--verbose", action="store_true", help="log each call to ma1sd to stderr (never bodies or passwords)"
    )
    return parser


# -- output -----------------------------------------------------------------------


class Report:
    """Collects findings and structured results; prints text lines as they come unless JSON is wanted."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.checks: List[Dict[str, str]] = []
        self.data: Dict[str, Any] = {
            "version": __version__,
            "synapse_version": _synapse_version(),
            "config_files": [],
            "module": None,
            "server_name": None,
            "settings": None,
            "localdb_enabled": None,
            "probe": {},
            "user": None,
        }

    def line(self, status: str, check: str, message: str) -> None:
        """Records a finding (status OK, WARN or FAIL) or an information line (status "")."""
        if status:
            self.checks.append({"status": status, "check": check, "message": message})
        if not self.as_json:
            print(("%-4s  %-9s  %s" % (status, check, message)).rstrip(), flush=True)

    def finish(self, exit_code: int) -> None:
        """Prints the result line, or the whole JSON object."""
        warnings = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == WARN]
        errors = [c["check"] + ": " + c["message"] for c in self.checks if c["status"] == FAIL]
        if self.as_json:
            result = dict(self.data)
            result.update(checks=self.checks, warnings=warnings, errors=errors, exit_code=exit_code)
            print(json.dumps(result, indent=2))
            return
        meaning = EXIT_MEANINGS.get(exit_code, "")
        if exit_code == EXIT_OK and warnings:
            meaning += " (%d warning%s)" % (len(warnings), "" if len(warnings) == 1 else "s")
        self.line(OK if exit_code == EXIT_OK else FAIL, "result", "%s: exit %d" % (meaning, exit_code))


def _synapse_version() -> Optional[str]:
    """Returns the installed Synapse's version, or None when Synapse is not importable."""
    try:
        import synapse
    except ImportError:
        return None
    return str(getattr(synapse, "__version__", "unknown"))


def _version_tuple(version: str) -> Tuple[int, ...]:
    """Returns the leading numbers of a version string, e.g. (1, 46, 0)."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _flatten(value: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Returns (dotted key, scalar) pairs of a nested mapping; empty mappings stay whole."""
    if isinstance(value, dict) and value:
        pairs: List[Tuple[str, Any]] = []
        for key, item in value.items():
            pairs.extend(_flatten(item, prefix + str(key) + "."))
        return pairs
    return [(prefix.rstrip("."), value)]


def _ms(seconds: float) -> str:
    """Returns a duration in milliseconds, for humans."""
    ms = seconds * 1000
    return "%.1f ms" % ms if ms < 10 else "%.0f ms" % ms


# -- configuration ------------------------------------------------------------------


class _ConfigFailure(Exception):
    """The configuration cannot be used; the message says why."""


def find_config_files(paths: Sequence[str]) -> List[str]:
    """Returns the files Synapse would read for these ``-c`` paths, in order.

    A directory stands for its ``*.yaml`` files in sorted order, as in Synapse.
    """
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            entries = [os.path.join(path, name) for name in os.listdir(path) if name.endswith(".yaml")]
            files.extend(sorted(e for e in entries if os.path.isfile(e)))
        else:
            files.append(path)
    return files


def load_config_files(files: Sequence[str], report: Report) -> Dict[str, Any]:
    """Returns the merged configuration: a later file's top-level keys replace earlier ones.

    Raises _ConfigFailure for a missing or unreadable file or invalid YAML.
    """
    if not files:
        raise _ConfigFailure("no config file found (a directory given with -c holds no *.yaml file?)")
    merged: Dict[str, Any] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                document = yaml.safe_load(f)
        except OSError as e:
            raise _ConfigFailure("%s: cannot read it (%s)" % (path, e.strerror or e)) from None
        except UnicodeDecodeError:
            raise _ConfigFailure("%s: not UTF-8 text" % path) from None
        except yaml.YAMLError as e:
            # Only the problem and its position: YAML's snippet of the line could show a secret.
            mark = getattr(e, "problem_mark", None)
            where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise _ConfigFailure("%s: not valid YAML%s: %s" % (path, where, problem)) from None
        report.data["config_files"].append(path)
        if not isinstance(document, dict):
            report.line(WARN, "config", "%s: empty or not a mapping; Synapse ignores it too" % path)
            continue
        report.line(
            OK, "config", "%s: read (%d top-level key%s)" % (path, len(document), "" if len(document) == 1 else "s")
        )
        merged.update(document)
    return merged


def find_module_block(merged: Dict[str, Any]) -> Tuple[str, int, Dict[str, Any]]:
    """Returns (section, index, block) of the module's only block.

    Raises _ConfigFailure when there is none, or more than one.
    """
    found: List[Tuple[str, int, Dict[str, Any]]] = []
    for section in SECTIONS:
        entries = merged.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise _ConfigFailure("'%s:' must be a list of blocks" % section)
        for index, entry in enumerate(entries):
            if isinstance(entry, dict) and str(entry.get("module", "")).strip() == MODULE_NAME:
                found.append((section, index, entry))
    if not found:
        raise _ConfigFailure("no block with 'module: %s' under 'modules:' or 'password_providers:'" % MODULE_NAME)
    if len(found) > 1:
        where = ", ".join("%s" % _block_name(s, i) for s, i, _ in found)
        sections = {s for s, _, _ in found}
        both = " (in both 'modules:' and 'password_providers:')" if len(sections) > 1 else ""
        raise _ConfigFailure(
            "the module is listed %d times%s: %s; keep one, or every login reaches ma1sd more than once"
            % (len(found), both, where)
        )
    return found[0]


def _block_name(section: str, index: int) -> str:
    """Returns how Synapse names a block in its error messages, e.g. ``modules.<item 0>``."""
    return "%s.<item %d>" % (section, index)


def config_error_location(e: BaseException) -> Tuple[str, str]:
    """Returns (dotted path starting with ``config``, message) of a ConfigError from parse_config.

    New Synapse keeps the path in ``e.path``; Synapse before 1.2x has it in the message.
    """
    path = getattr(e, "path", None)
    message = getattr(e, "msg", None) or str(e)
    if path:
        return "config." + ".".join(str(p) for p in path), str(message)
    match = re.match(r"rest_auth_provider: (config(?:\.[^:]*)?): (.*)\Z", str(message), re.S)
    if match:
        return match.group(1), match.group(2)
    return "config", str(message)


def check_back_door(merged: Dict[str, Any], report: Report) -> None:
    """Warns when Synapse's own password database still accepts passwords."""
    password_config = merged.get("password_config")
    enabled: Any = True
    if isinstance(password_config, dict) and "localdb_enabled" in password_config:
        enabled = password_config["localdb_enabled"]
    report.data["localdb_enabled"] = bool(enabled)
    if enabled:
        report.line(
            WARN,
            "back door",
            "password_config.localdb_enabled is not false (default true): users can set a local Synapse "
            "password that keeps working after ma1sd disables them; set password_config: {localdb_enabled: false}",
        )
    else:
        report.line(OK, "back door", "password_config.localdb_enabled: false: only ma1sd decides password logins")


def load_and_validate(paths: Sequence[str], report: Report) -> Tuple[Dict[str, Any], ProviderConfig, Ma1sdClient]:
    """Returns the merged config, the module's validated config and a client for it.

    Raises _ConfigFailure when any of it is wrong.
    """
    merged = load_config_files(find_config_files(paths), report)
    section, index, block = find_module_block(merged)
    name = _block_name(section, index)
    report.data["module"] = {"section": section, "index": index}
    style = "the current style" if section == "modules" else "the legacy style, honoured by every release"
    report.line(OK, "module", "found under '%s:' (%s), item %d" % (section, style, index))
    synapse_version = report.data["synapse_version"]
    if section == "modules" and synapse_version and (0,) < _version_tuple(synapse_version) < MODULES_SINCE:
        report.line(
            WARN,
            "module",
            "the installed Synapse %s is older than 1.46 and cannot load it from 'modules:'; "
            "use 'password_providers:'" % synapse_version,
        )
    try:
        config = parse_config(block.get("config"))
    except Exception as e:
        path, message = config_error_location(e)
        raise _ConfigFailure("%s.%s: %s" % (name, path, message)) from None
    try:
        client = Ma1sdClient(config)
    except Exception as e:
        raise _ConfigFailure(
            "%s.config: cannot load the TLS or header files: %s" % (name, _exception_text(e))
        ) from None
    report.line(OK, "module", "%s.config is valid" % name)
    settings = config.describe()
    report.data["settings"] = settings
    for key, value in _flatten(settings):
        report.line("", "setting", "%s = %s" % (key, json.dumps(value)))

    server_name = merged.get("server_name")
    if isinstance(server_name, str) and server_name:
        report.data["server_name"] = server_name
    else:
        report.line(WARN, "config", "no 'server_name' in the merged configuration (Synapse needs one)")
    check_back_door(merged, report)
    return merged, config, client


def _exception_text(e: BaseException) -> str:
    """Returns a short description of an exception: its type and message."""
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (e.filename or type(e).__name__, e.strerror)
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


# -- network probe (blocking stdlib; this command does not run inside Synapse) -------


class _ProbeFailed(Exception):
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
    """Returns the addresses to try; raises _ProbeFailed when the name does not resolve."""
    started = time.monotonic()
    try:
        infos = _resolve(host, port, timeout)
    except _DnsTimeout:
        result = {"ok": False, "host": host, "error": "no answer within %g s" % timeout}
        report.data["probe"]["dns"] = result
        raise _ProbeFailed("dns", "%s: no DNS answer within %g s" % (host, timeout)) from None
    except (socket.gaierror, OSError) as e:
        reason = e.strerror or str(e)
        report.data["probe"]["dns"] = {"ok": False, "host": host, "error": reason}
        raise _ProbeFailed("dns", "%s: cannot be resolved (%s)" % (host, reason)) from None
    elapsed = time.monotonic() - started
    addresses: List[str] = []
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    report.data["probe"]["dns"] = {"ok": True, "host": host, "addresses": addresses, "ms": round(elapsed * 1000, 1)}
    report.line(OK, "dns", "%s -> %s (%s)" % (host, ", ".join(addresses), _ms(elapsed)))
    return infos


def probe_tcp(infos: List[Any], port: int, timeout: float, report: Report) -> socket.socket:
    """Returns a connected socket to the first address that answers; raises _ProbeFailed if none does."""
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
            reasons.append("%s: %s" % (address[0], e.strerror or e))
        else:
            elapsed = time.monotonic() - started
            report.data["probe"]["tcp"] = {
                "ok": True,
                "address": address[0],
                "port": port,
                "ms": round(elapsed * 1000, 1),
            }
            report.line(OK, "tcp", "connected to %s port %d in %s" % (address[0], port, _ms(elapsed)))
            return sock
        sock.close()
    report.data["probe"]["tcp"] = {"ok": False, "port": port, "error": "; ".join(reasons)}
    raise _ProbeFailed("tcp", "port %d: %s" % (port, "; ".join(reasons)))


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
    """Verifies the server's certificate as the module would; raises _ProbeFailed when it is not trusted."""
    trust = "tls.ca_file %s" % config.tls.ca_file if config.tls.ca_file else "the system's CAs"
    family, peer = sock.family, sock.getpeername()
    try:
        context = _tls_context(config)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        sock.close()
        reason = "cannot load the TLS files: %s" % _exception_text(e)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise _ProbeFailed("tls", reason) from None
    started = time.monotonic()
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            elapsed = time.monotonic() - started
            facts = _certificate_facts(tls.getpeercert(binary_form=True))
            version = tls.version()
    except ssl.SSLCertVerificationError as e:
        facts = _presented_certificate(family, peer, host, config.timeout)
        reason = "certificate not trusted by %s: %s" % (trust, e.verify_message or e.reason)
        report.data["probe"]["tls"] = {"ok": False, "error": reason, "certificate": facts or None}
        details = _describe_certificate(facts)
        if details:
            details[0] = "the server presents: " + details[0]
        raise _ProbeFailed("tls", reason, details) from None
    except ssl.SSLError as e:
        reason = "TLS handshake failed (%s): does this port speak TLS?" % (e.reason or e)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise _ProbeFailed("tls", reason) from None
    except socket.timeout:
        reason = "no TLS handshake within %g s" % config.timeout
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise _ProbeFailed("tls", reason) from None
    except OSError as e:
        reason = "connection lost during the TLS handshake (%s)" % (e.strerror or type(e).__name__)
        report.data["probe"]["tls"] = {"ok": False, "error": reason}
        raise _ProbeFailed("tls", reason) from None
    finally:
        sock.close()
    report.data["probe"]["tls"] = dict(
        ok=True, version=version, verified_with=trust, ms=round(elapsed * 1000, 1), certificate=facts
    )
    report.line(OK, "tls", "%s, certificate verified with %s (%s)" % (version, trust, _ms(elapsed)))
    if facts:
        subject, expiry = _describe_certificate(facts)
        report.line("", "tls", subject)
        report.line(WARN if facts["days_left"] < CERT_EXPIRY_WARNING_DAYS else OK, "tls", expiry)


def _describe_certificate(facts: Dict[str, Any]) -> List[str]:
    """Returns two lines about a certificate: who it names and who issued it, and when it expires."""
    if not facts:
        return []
    issuer = "self-signed" if facts["issuer"] == facts["subject"] else "issued by %s" % facts["issuer"]
    names = " for %s" % ", ".join(facts["names"]) if facts["names"] else ""
    days = facts["days_left"]
    return [
        "subject %s%s, %s" % (facts["subject"], names, issuer),
        "expires %s (%d day%s left)" % (facts["not_after"], days, "" if days in (1, -1) else "s"),
    ]


def probe_socket_level(config: ProviderConfig, report: Report) -> None:
    """Runs the DNS, TCP and TLS steps; raises _ProbeFailed at the first failure."""
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


# -- HTTP probe and user check (Twisted, through the module's own client) -----------


def classify_probe_reply(status: int, body: bytes) -> Tuple[bool, str, Optional[str]]:
    """Returns (looks like ma1sd, explanation, errcode) for the reply to the probe user."""
    if 300 <= status < 400:
        return False, "HTTP %d redirect, never followed: point 'endpoint' at the final URL" % status, None
    try:
        value = decode_json(body)
    except MalformedReply as e:
        return False, "HTTP %d, %s: not ma1sd (wrong 'endpoint', or a proxy's error page?)" % (status, e), None
    errcode = value.get("errcode") if isinstance(value, dict) else None
    errcode = errcode if isinstance(errcode, str) else None
    if 200 <= status < 300:
        try:
            reply = parse_check_credentials(value)
        except MalformedReply as e:
            return False, "HTTP %d, JSON but not a check_credentials reply: %s" % (status, e), errcode
        if reply.success:
            return (
                False,
                "HTTP %d, but it ACCEPTED the made-up user %s with password 'x': would it accept any password?"
                % (status, PROBE_USER_ID),
                errcode,
            )
        return True, "HTTP %d, answers like ma1sd (auth.success = false for the made-up probe user)" % status, errcode
    if status == 400 and errcode is not None:
        return (
            True,
            "HTTP 400 %s, ma1sd's answer to an invalid user ID (expected for the probe user)" % errcode,
            errcode,
        )
    hint = {
        401: ": check 'headers' / 'header_files'",
        403: ": check 'headers' / 'header_files'",
        404: ": check 'endpoint' (path prefix?)",
    }.get(status, "")
    shown = " %s" % errcode if errcode else ""
    return False, "HTTP %d%s, not a check_credentials answer%s" % (status, shown, hint), errcode


async def _post(client: Ma1sdClient, url: str, body: bytes) -> Tuple[int, bytes]:
    """Returns (status, body) of a POST through the client (its headers, TLS
    policy, size cap and timeout), whatever the status.

    Raises BackendError when there is no complete reply.
    """
    status, _, data = await client.request_raw("check_credentials", b"POST", url, body)
    return status, data


async def probe_http(client: Ma1sdClient, reactor: Any, config: ProviderConfig, report: Report) -> bool:
    """Returns True when the check_credentials URL answers the probe user like ma1sd."""
    url = config.check_credentials_url
    body = json.dumps({"user": {"id": PROBE_USER_ID, "password": PROBE_PASSWORD}}).encode("utf-8")
    started = time.monotonic()
    try:
        status, data = await _post(client, url, body)
    except BackendError as e:
        report.data["probe"]["http"] = {"ok": False, "url": url, "status": None, "error": str(e)}
        report.line(FAIL, "http", "POST %s: %s" % (url, e))
        return False
    elapsed = time.monotonic() - started
    ok, explanation, errcode = classify_probe_reply(status, data)
    report.data["probe"]["http"] = {
        "ok": ok,
        "url": url,
        "status": status,
        "ms": round(elapsed * 1000, 1),
        "ma1sd_like": ok,
        "errcode": errcode,
        "detail": explanation,
    }
    report.line("", "http", "POST %s for %s" % (url, PROBE_USER_ID))
    report.line(OK if ok else FAIL, "http", "%s (%s)" % (explanation, _ms(elapsed)))
    return ok


def describe_login(reply: AuthReply, config: ProviderConfig, report: Report) -> Dict[str, Any]:
    """Prints what a login with these accepted credentials would do; returns the same as data."""
    policy = config.policy
    name = reply.display_name
    result: Dict[str, Any] = {"display_name": name}
    report.line("", "profile", "display name from ma1sd: %s" % (json.dumps(name) if name else "(none)"))
    report.line("", "account", "registration happens on first login if the account does not exist")
    report.line("", "", "(this command does not read Synapse's database, so it cannot tell)")

    if not policy.registration_profile_name:
        on_registration = None
        text = "no display name set (policy.registration.profile.name: false)"
    elif name is None:
        on_registration = None
        text = "no display name set (ma1sd sent none)"
    else:
        on_registration = name
        text = "display name set to %s" % json.dumps(name)
    result["registration_sets_display_name"] = on_registration
    report.line("", "profile", "on registration: %s" % text)

    if not policy.login_profile_name:
        on_login = None
        text = "display name left as it is (policy.login.profile.name: false)"
    elif name is None:
        on_login = None
        text = "display name left as it is (ma1sd sent none)"
    else:
        on_login = name
        text = "display name set to %s if it differs" % json.dumps(name)
    result["login_sets_display_name"] = on_login
    report.line("", "profile", "on later logins: %s" % text)

    adds: List[Dict[str, str]] = []
    ignored: List[Dict[str, str]] = []
    result["threepids_add"] = adds
    result["threepids_ignored"] = ignored
    result["threepids_replace"] = False
    if not policy.threepid_update:
        report.line("", "3pid", "not synced (policy.all.threepid.update: false)")
        return result
    if reply.three_pids is None:
        report.line("", "3pid", "ma1sd sent no 3PID list: none added, none removed")
        return result
    for pid in reply.three_pids:
        canonical = canonical_threepid(pid.medium, pid.address)
        if canonical is not None:
            if {"medium": canonical[0], "address": canonical[1]} not in adds:
                adds.append({"medium": canonical[0], "address": canonical[1]})
        elif pid.medium in ("email", "msisdn"):
            ignored.append({"medium": pid.medium, "address": pid.address, "reason": "unusable address"})
        else:
            ignored.append({"medium": pid.medium, "address": pid.address, "reason": "only email and msisdn are kept"})
    for added in adds:
        report.line(
            "",
            "3pid",
            "adds %s %s (unless already there; never taken from another account)" % (added["medium"], added["address"]),
        )
    for item in ignored:
        report.line("", "3pid", "ignores %s %s: %s" % (item["medium"], json.dumps(item["address"]), item["reason"]))
    if not adds and not ignored:
        report.line("", "3pid", "ma1sd lists no 3PIDs")
    if policy.threepid_replace:
        result["threepids_replace"] = True
        removed = "local 3PIDs not in this list" if adds else "every local 3PID"
        report.line("", "3pid", "policy.all.threepid.replace: true: %s would be removed" % removed)
    return result


async def check_user(client: Ma1sdClient, user_id: str, password: str, config: ProviderConfig, report: Report) -> int:
    """Asks ma1sd about the user's password; returns the exit code for the outcome."""
    started = time.monotonic()
    try:
        reply = await client.check_credentials(user_id, password)
    except BackendError as e:
        report.data["user"].update(checked=True, accepted=None, error=str(e))
        report.line(FAIL, "login", "%s: ma1sd could not answer: %s" % (user_id, e))
        return EXIT_BACKEND
    elapsed = time.monotonic() - started
    report.data["user"].update(checked=True, accepted=reply.success, ms=round(elapsed * 1000, 1))
    if not reply.success:
        report.line(FAIL, "login", "%s: ma1sd refused the credentials (%s)" % (user_id, _ms(elapsed)))
        return EXIT_REFUSED
    report.line(OK, "login", "%s: ma1sd accepted the credentials (%s)" % (user_id, _ms(elapsed)))
    report.data["user"]["login"] = describe_login(reply, config, report)
    return EXIT_OK


async def run_async(
    reactor: Any,
    client: Ma1sdClient,
    config: ProviderConfig,
    user: Optional[Tuple[str, str]],
    report: Report,
) -> int:
    """Returns the exit code of the HTTP probe and, if asked, the user check."""
    try:
        if not await probe_http(client, reactor, config, report):
            if user is not None:
                report.line("", "login", "not checked: ma1sd did not answer the probe correctly")
            return EXIT_BACKEND
        if user is None:
            return EXIT_OK
        return await check_user(client, user[0], user[1], config, report)
    finally:
        await client.close()


def run_in_reactor(client: Ma1sdClient, config: ProviderConfig, user: Optional[Tuple[str, str]], report: Report) -> int:
    """Returns run_async's exit code, run in a fresh Twisted reactor (possible once per process).

    Raises what run_async raised, and KeyboardInterrupt when the reactor was stopped by a signal.
    """
    codes: List[int] = []
    errors: List[BaseException] = []
    stopping: List[bool] = []

    async def body(reactor: Any) -> None:
        # Set when a signal stops the reactor: failures after that are not ma1sd's.
        reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)
        try:
            code = await run_async(reactor, client, config, user, report)
        except Exception as e:  # raised again below, outside the reactor
            errors.append(e)
            return
        if not stopping:
            codes.append(code)

    try:
        task.react(lambda reactor: defer.ensureDeferred(body(reactor)))
    except SystemExit:  # react() always exits; the outcome is in ``codes`` or ``errors``
        pass
    if not codes and (stopping or not errors):  # a signal stopped the reactor before the checks ended
        raise KeyboardInterrupt()
    if errors:
        raise errors[0]
    return codes[0]


# -- the command ----------------------------------------------------------------------


def read_password(prompt: str, from_stdin: bool) -> str:
    """Returns the password: without echo from the terminal, or the first line of stdin."""
    stdin = sys.stdin
    if from_stdin or stdin is None or not stdin.isatty():
        if stdin is None:
            return ""
        line = stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        return line
    return getpass.getpass(prompt)


def resolve_user(args: argparse.Namespace, report: Report) -> Tuple[Optional[Tuple[str, str]], int]:
    """Returns ((user ID, password) or None, exit code so far) for ``--user``; reads the password."""
    if args.user is None:
        return None, EXIT_OK
    report.data["user"] = {"name": args.user, "user_id": None, "checked": False, "accepted": None}
    server_name = report.data["server_name"]
    if server_name is None:
        report.line(FAIL, "login", "cannot build the user ID: no 'server_name' in the configuration")
        return None, EXIT_CONFIG
    try:
        name = parse_login_name(args.user, server_name)
    except LocalRefusal as e:
        report.data["user"].update(checked=True, accepted=False, error=str(e))
        report.line(FAIL, "login", "%r would be refused without asking ma1sd: %s" % (args.user, e))
        return None, EXIT_REFUSED
    report.data["user"]["user_id"] = name.user_id
    report.data["user"]["registrable"] = name.registrable
    if not name.registrable:
        report.line(
            WARN,
            "login",
            "%s cannot be created as a new account (Synapse refuses such a user ID); "
            "only an existing account with this ID can log in" % name.user_id,
        )
    password = read_password("Password for %s: " % name.user_id, args.password_stdin)
    if not password:
        report.data["user"].update(checked=True, accepted=False, error="empty password")
        report.line(FAIL, "login", "%s: empty password, refused without asking ma1sd" % name.user_id)
        return None, EXIT_REFUSED
    return (name.user_id, password), EXIT_OK


def check(args: argparse.Namespace) -> int:
    """Runs ``check``; returns its exit code."""
    report = Report(args.json)
    report.line(
        "",
        "check",
        "rest_auth_provider %s, Synapse %s, Python %s"
        % (__version__, report.data["synapse_version"] or "(not installed)", sys.version.split()[0]),
    )
    try:
        _, config, client = load_and_validate(args.config_paths, report)
    except _ConfigFailure as e:
        report.line(FAIL, "config", str(e))
        report.finish(EXIT_CONFIG)
        return EXIT_CONFIG

    user, code = resolve_user(args, report)
    if code != EXIT_OK:
        report.finish(code)
        return code

    try:
        probe_socket_level(config, report)
    except _ProbeFailed as e:
        report.line(FAIL, e.step, str(e))
        for detail in e.details:
            report.line("", e.step, detail)
        report.line("", "http", "not tried")
        if user is not None:
            report.line("", "login", "not checked: ma1sd is not reachable")
        report.finish(EXIT_BACKEND)
        return EXIT_BACKEND

    code = run_in_reactor(client, config, user, report)
    report.finish(code)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("rest_auth_provider").setLevel(logging.DEBUG)
    try:
        if args.command == "check":
            return check(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise AssertionError("unknown command %r" % args.command)


if __name__ == "__main__":
    sys.exit(main())
