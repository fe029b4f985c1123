"""Throwaway certificates for TLS tests, made with ``cryptography``.

:func:`write_certs` makes a CA, a server certificate for 127.0.0.1 (IP SAN)
and ``localhost`` (DNS SAN) signed by that CA, a self-signed server
certificate that the CA did not sign, and a client certificate signed by the
CA, and writes them as PEM files. For the cases where verifiers differ, it
also makes two more server certificates signed by the CA: one for another
host name only, and one for 127.0.0.1 without an Authority Key Identifier
(which OpenSSL accepts, and Python 3.13's ``ssl`` defaults refuse).

Only APIs that exist from cryptography 3.0 to today are used: the backend is
passed explicitly (required before 3.1, ignored since), and validity times are
timezone-aware datetimes (accepted by every release, required by none).
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_IP = "127.0.0.1"
SERVER_DNS_NAME = "localhost"
OTHER_DNS_NAME = "ma1sd.other.test"


@dataclass(frozen=True)
class CertPaths:
    """Where :func:`write_certs` put each PEM file."""

    ca_cert: str
    server_cert: str
    server_key: str
    self_signed_cert: str
    self_signed_key: str
    client_cert: str
    client_key: str
    other_name_cert: str
    other_name_key: str
    no_key_id_cert: str
    no_key_id_key: str

    @property
    def server(self) -> Tuple[str, str]:
        """Returns (certificate, key) of the CA-signed server, for ``FakeMa1sd(tls=...)``."""
        return self.server_cert, self.server_key

    @property
    def self_signed(self) -> Tuple[str, str]:
        """Returns (certificate, key) of the self-signed server, for ``FakeMa1sd(tls=...)``."""
        return self.self_signed_cert, self.self_signed_key

    @property
    def other_name(self) -> Tuple[str, str]:
        """Returns (certificate, key) of a CA-signed server for ``OTHER_DNS_NAME`` only."""
        return self.other_name_cert, self.other_name_key

    @property
    def no_key_id(self) -> Tuple[str, str]:
        """Returns (certificate, key) of a CA-signed server for 127.0.0.1 without an Authority Key Identifier."""
        return self.no_key_id_cert, self.no_key_id_key


def _new_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1(), default_backend())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rest_auth_provider tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    is_ca: bool,
    usages: Optional[List[x509.ObjectIdentifier]] = None,
    server_names: bool = False,
    other_name: bool = False,
    key_id: bool = True,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(_key_usage(is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_id:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(authority, critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alt_names = [x509.IPAddress(ipaddress.ip_address(SERVER_IP)), x509.DNSName(SERVER_DNS_NAME)]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if other_name:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(OTHER_DNS_NAME)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256(), default_backend())


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def write_certs(directory: str) -> CertPaths:
    """Writes a fresh CA, servers and client as PEM files into ``directory``; returns their paths."""
    ca_key = _new_key()
    ca_name = _name("rest_auth_provider test CA")
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, is_ca=True)

    server_key = _new_key()
    server = _certificate(
        _name(SERVER_IP),
        server_key,
        ca_name,
        ca_key,
        is_ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        server_names=True,
    )

    self_signed_key = _new_key()
    self_signed_name = _name("rest_auth_provider self-signed server")
    self_signed = _certificate(
        self_signed_name,
        self_signed_key,
        self_signed_name,
        self_signed_key,
        is_ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        server_names=True,
    )

    client_key = _new_key()
    client = _certificate(
        _name("rest_auth_provider test client"),
        client_key,
        ca_name,
        ca_key,
        is_ca=False,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    other_name_key = _new_key()
    other_name = _certificate(
        _name(OTHER_DNS_NAME),
        other_name_key,
        ca_name,
        ca_key,
        is_ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        other_name=True,
    )

    no_key_id_key = _new_key()
    no_key_id = _certificate(
        _name(SERVER_IP + " without key ID"),
        no_key_id_key,
        ca_name,
        ca_key,
        is_ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        server_names=True,
        key_id=False,
    )

    return CertPaths(
        ca_cert=_write(directory, "ca.pem", _cert_pem(ca)),
        server_cert=_write(directory, "server.pem", _cert_pem(server)),
        server_key=_write(directory, "server.key", _key_pem(server_key)),
        self_signed_cert=_write(directory, "self-signed.pem", _cert_pem(self_signed)),
        self_signed_key=_write(directory, "self-signed.key", _key_pem(self_signed_key)),
        client_cert=_write(directory, "client.pem", _cert_pem(client)),
        client_key=_write(directory, "client.key", _key_pem(client_key)),
        other_name_cert=_write(directory, "other-name.pem", _cert_pem(other_name)),
        other_name_key=_write(directory, "other-name.key", _key_pem(other_name_key)),
        no_key_id_cert=_write(directory, "no-key-id.pem", _cert_pem(no_key_id)),
        no_key_id_key=_write(directory, "no-key-id.key", _key_pem(no_key_id_key)),
    )
