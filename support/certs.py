"""Throwaway certificates for the TLS tests and the benchmark, made with ``cryptography``.

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
from typing import Any, Dict, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_IP = "127.0.0.1"
SERVER_DNS_NAME = "localhost"
OTHER_DNS_NAME = "ma1sd.other.test"


class _Pair:
    """A (certificate, key) attribute of :class:`CertPaths`: ``paths.server`` is
    ``(paths.server_cert, paths.server_key)``, for ``FakeMa1sd(tls=...)``."""

    def __set_name__(self, owner: Any, name: str) -> None:
        self.name = name

    def __get__(self, paths: Any, owner: Any = None) -> Tuple[str, str]:
        return getattr(paths, self.name + "_cert"), getattr(paths, self.name + "_key")


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

    # (certificate, key) pairs: the CA-signed server; the self-signed server; a
    # CA-signed server for OTHER_DNS_NAME only; a CA-signed server for 127.0.0.1
    # without an Authority Key Identifier (OpenSSL accepts it, Python 3.13's ssl not).
    server = _Pair()
    self_signed = _Pair()
    other_name = _Pair()
    no_key_id = _Pair()


@dataclass(frozen=True)
class _Leaf:
    """A certificate :func:`write_certs` makes besides the CA."""

    common_name: str
    usage: x509.ObjectIdentifier
    alt_names: Tuple[x509.GeneralName, ...] = ()
    self_signed: bool = False  # else signed by the CA
    key_id: bool = True  # with an Authority Key Identifier


_SERVER_NAMES = (x509.IPAddress(ipaddress.ip_address(SERVER_IP)), x509.DNSName(SERVER_DNS_NAME))
_SERVER, _CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
# By the CertPaths name of their files (``_`` is ``-`` in the file names).
_LEAVES: Dict[str, _Leaf] = {
    "server": _Leaf(SERVER_IP, _SERVER, _SERVER_NAMES),
    "self_signed": _Leaf("rest_auth_provider self-signed server", _SERVER, _SERVER_NAMES, self_signed=True),
    "client": _Leaf("rest_auth_provider test client", _CLIENT),
    "other_name": _Leaf(OTHER_DNS_NAME, _SERVER, (x509.DNSName(OTHER_DNS_NAME),)),
    "no_key_id": _Leaf(SERVER_IP + " without key ID", _SERVER, _SERVER_NAMES, key_id=False),
}


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
    usages: Sequence[x509.ObjectIdentifier] = (),
    alt_names: Sequence[x509.GeneralName] = (),
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
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
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
    paths = {"ca_cert": _write(directory, "ca.pem", _cert_pem(ca))}
    for name, leaf in _LEAVES.items():
        key = _new_key()
        subject = _name(leaf.common_name)
        issuer, issuer_key = (subject, key) if leaf.self_signed else (ca_name, ca_key)
        cert = _certificate(subject, key, issuer, issuer_key, False, [leaf.usage], leaf.alt_names, leaf.key_id)
        stem = name.replace("_", "-")
        paths[name + "_cert"] = _write(directory, stem + ".pem", _cert_pem(cert))
        paths[name + "_key"] = _write(directory, stem + ".key", _key_pem(key))
    return CertPaths(**paths)
