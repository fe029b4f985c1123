"""``check``'s TLS step and a login agree about every certificate: both use the
module's own TLS policy (``transport.tls_policy``) over Twisted's TLS.

Each case is run twice against the same server: through the probe that
``check`` runs (in this process: it is blocking code and needs no reactor)
and through the module's HTTP transport, as a login. Two of the cases are ones
where Python's ``ssl`` defaults (3.13 and later) and OpenSSL as Twisted uses it
disagree, so a probe built on ``ssl`` would tell the admin the opposite of what
a login then does.
"""

import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from rest_auth_provider.cli.probe import ProbeFailed, probe_socket_level
from rest_auth_provider.cli.report import Report
from rest_auth_provider.config import parse_config
from rest_auth_provider.transport import BackendError, Transport
from support.certs import OTHER_DNS_NAME, CertPaths, write_certs
from support.fake_ma1sd import CHECK_PATH, FakeMa1sd
from support.twisted_helpers import ensure_deferred
from tests.unit.conftest import Serve
from tests.unit.test_cli import Runner, check, homeserver

ALICE = "@alice:example.com"
PASSWORD = "correct horse battery staple"
CHECK_BODY = {"user": {"id": ALICE, "password": PASSWORD}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_certs(str(tmp_path_factory.mktemp("certs")))


def _server(serve: Serve, certs: CertPaths, which: str) -> FakeMa1sd:
    server = serve(FakeMa1sd(tls=getattr(certs, which)))
    server.add_user(ALICE, PASSWORD)
    return server


def _probe(url: str, tls: Dict[str, str]) -> Tuple[Optional[ProbeFailed], Dict[str, Any]]:
    """Returns (the failure or None, the report's ``probe.tls``) of check's socket-level probe."""
    report = Report(True)
    try:
        probe_socket_level(parse_config({"endpoint": url, "tls": tls}), report)
    except ProbeFailed as e:
        return e, report.data["probe"]["tls"]
    return None, report.data["probe"]["tls"]


async def _login(url: str, tls: Dict[str, str]) -> Optional[str]:
    """Returns None when the module's transport gets a reply from ``url``, else its BackendError."""
    transport = Transport(parse_config({"endpoint": url, "tls": tls}))
    try:
        await transport.request("check_credentials", "POST", url + CHECK_PATH, json_body=CHECK_BODY)
    except BackendError as e:
        return str(e)
    finally:
        await transport.close()
    return None


def _stdlib_accepts(url: str, ca_file: str) -> bool:
    """Returns True when Python's default ``ssl`` verification accepts the server's certificate."""
    host, port = url[len("https://") :].rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with socket.create_connection((host, int(port))) as raw, context.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLCertVerificationError:
        return False


# (server, tls config keys naming CertPaths fields, accepted by the module?)
CASES = [
    ("server", {"ca_file": "ca_cert"}, True),
    ("server", {"ca_file": "ca_cert", "client_certificate": "client_cert", "client_key": "client_key"}, True),
    ("server", {}, False),
    ("self_signed", {}, False),
    ("self_signed", {"ca_file": "ca_cert"}, False),
    ("self_signed", {"ca_file": "self_signed_cert"}, True),
    ("server", {"ca_file": "server_cert"}, False),
    ("other_name", {"ca_file": "ca_cert"}, False),
    ("no_key_id", {"ca_file": "ca_cert"}, True),
]


@pytest.mark.parametrize("which, tls_keys, accepted", CASES)
@ensure_deferred
async def test_check_and_a_login_agree(
    serve: Serve, certs: CertPaths, which: str, tls_keys: Dict[str, str], accepted: bool
) -> None:
    tls = {key: getattr(certs, field) for key, field in tls_keys.items()}
    server = _server(serve, certs, which)
    failure, result = _probe(server.url, tls)
    login = await _login(server.url, tls)
    assert (failure is None) is accepted, failure
    assert (login is None) is accepted, login
    assert result["ok"] is accepted
    if not accepted:
        assert login == "TLS handshake failed (certificate not trusted or wrong host name?)"
        assert failure is not None and failure.step == "tls"
        assert str(failure).startswith("certificate not trusted by ")


@ensure_deferred
async def test_a_pinned_server_certificate_is_refused_as_a_login_refuses_it(serve: Serve, certs: CertPaths) -> None:
    # tls.ca_file holding the server's own CA-signed certificate instead of the CA:
    # OpenSSL (and so the module) wants a chain up to a self-signed root.
    server = _server(serve, certs, "server")
    failure, result = _probe(server.url, {"ca_file": certs.server_cert})
    login = await _login(server.url, {"ca_file": certs.server_cert})
    stdlib = _stdlib_accepts(server.url, certs.server_cert)
    assert login is not None
    assert failure is not None
    assert str(failure) == "certificate not trusted by tls.ca_file %s: unable to get local issuer certificate" % (
        certs.server_cert
    )
    assert failure.details[0].startswith("the server presents: subject CN=127.0.0.1,O=rest_auth_provider tests for ")
    assert result["certificate"]["issuer"] == "CN=rest_auth_provider test CA,O=rest_auth_provider tests"
    # The control: Python's ssl defaults trust a partial chain since 3.13, so
    # a probe built on them would have said "verified" here.
    assert stdlib is (sys.version_info >= (3, 13))


@ensure_deferred
async def test_a_certificate_without_authority_key_id_is_accepted_as_a_login_accepts_it(
    serve: Serve, certs: CertPaths
) -> None:
    server = _server(serve, certs, "no_key_id")
    failure, result = _probe(server.url, {"ca_file": certs.ca_cert})
    login = await _login(server.url, {"ca_file": certs.ca_cert})
    stdlib = _stdlib_accepts(server.url, certs.ca_cert)
    assert failure is None
    assert login is None
    assert result["ok"] is True
    assert result["verified_with"] == "tls.ca_file %s" % certs.ca_cert
    assert result["certificate"]["subject"] == "CN=127.0.0.1 without key ID,O=rest_auth_provider tests"
    # The control: Python's ssl defaults refuse it since 3.13 (VERIFY_X509_STRICT).
    assert stdlib is (sys.version_info < (3, 13))


def test_a_certificate_for_another_name_is_refused_and_shown(certs: CertPaths) -> None:
    with FakeMa1sd(tls=certs.other_name) as server:
        failure, result = _probe(server.url, {"ca_file": certs.ca_cert})
        assert server.requests == []
    assert failure is not None
    assert str(failure) == (
        "certificate not trusted by tls.ca_file %s: IP address mismatch, certificate is not valid for '127.0.0.1'."
        % certs.ca_cert
    )
    assert failure.details == [
        "the server presents: subject CN=%s,O=rest_auth_provider tests for %s, issued by "
        "CN=rest_auth_provider test CA,O=rest_auth_provider tests" % (OTHER_DNS_NAME, OTHER_DNS_NAME),
        "expires %s (1 day left)" % result["certificate"]["not_after"],
    ]


def test_a_port_that_does_not_speak_tls(certs: CertPaths) -> None:
    with FakeMa1sd() as plain:
        failure, result = _probe(plain.url.replace("http://", "https://"), {})
    assert failure is not None
    assert str(failure).startswith("TLS handshake failed (")
    assert str(failure).endswith("): does this port speak TLS?")
    assert "certificate" not in result


class _Silent:
    """A TCP server on 127.0.0.1 that accepts connections and then either
    closes them at once or never says anything."""

    def __init__(self, close: bool) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._close = close
        self._held: List[socket.socket] = []
        self.url = "https://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            if self._close:
                connection.close()
            else:
                self._held.append(connection)

    def stop(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def closing_server() -> Iterator[_Silent]:
    server = _Silent(close=True)
    yield server
    server.stop()


@pytest.fixture
def silent_server() -> Iterator[_Silent]:
    server = _Silent(close=False)
    yield server
    server.stop()


def test_a_server_that_closes_during_the_handshake(closing_server: _Silent) -> None:
    failure, result = _probe(closing_server.url, {})
    assert failure is not None
    assert str(failure).startswith("connection lost during the TLS handshake (")
    assert result == {"ok": False, "error": str(failure)}


def test_a_server_that_never_answers_the_handshake(silent_server: _Silent) -> None:
    # The server never answers, so the outcome does not depend on how long the wait really took.
    report = Report(True)
    with pytest.raises(ProbeFailed) as info:
        probe_socket_level(parse_config({"endpoint": silent_server.url, "timeout": 0.25}), report)
    assert str(info.value) == "no TLS handshake within 0.25 s"
    assert report.data["probe"]["tls"] == {"ok": False, "error": "no TLS handshake within 0.25 s"}


def test_tls_files_changed_since_the_config_was_read(certs: CertPaths, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(Path(certs.ca_cert).read_text())
    report = Report(True)
    with FakeMa1sd(tls=certs.server) as server:
        config = parse_config({"endpoint": server.url, "tls": {"ca_file": str(ca_file)}})
        ca_file.write_text("not a certificate\n")
        with pytest.raises(ProbeFailed) as info:
            probe_socket_level(config, report)
    assert str(info.value) == "cannot load the TLS files: ValueError: no PEM certificate in %s" % ca_file


# -- the whole command ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """test_cli's runner: ``check`` in a fresh child process each time."""
    process = Runner(tmp_path_factory.mktemp("runner") / "stderr")
    yield process
    process.close()


def test_check_refuses_a_pinned_server_certificate(cli: Runner, certs: CertPaths, tmp_path: Path) -> None:
    with FakeMa1sd(tls=certs.server) as server:
        result = check(cli, homeserver(tmp_path, {"endpoint": server.url, "tls": {"ca_file": certs.server_cert}}))
        assert server.requests == []
    assert result.code == 3, result.output
    [failure] = result.lines("FAIL")[:1]
    assert (
        failure
        == "FAIL  tls        certificate not trusted by tls.ca_file %s: unable to get local issuer certificate"
        % (certs.server_cert)
    )
    assert "      tls        the server presents: subject CN=127.0.0.1" in result.stdout
    assert "      http       not tried" in result.stdout


def test_check_accepts_what_a_login_accepts(cli: Runner, certs: CertPaths, tmp_path: Path) -> None:
    with FakeMa1sd(tls=certs.no_key_id) as server:
        result = check(cli, homeserver(tmp_path, {"endpoint": server.url, "tls": {"ca_file": certs.ca_cert}}))
    assert result.code == 0, result.output
    assert "certificate verified with tls.ca_file %s" % certs.ca_cert in result.stdout
