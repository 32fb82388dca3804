"""Certificates for humans: a cluster CA and member certificates (the ``cryptography`` package).

Public API::

    make_ca(name="phxq cluster CA", days=3650) -> (cert_pem, key_pem)
    make_member_cert(ca_cert_pem, ca_key_pem, member, hosts=(), days=825,
                     not_before=None) -> (cert_pem, key_pem)
    write_private(path, data)                  # created 0600 (never readable by others)
    cert_not_after(path | pem) -> float        # expiry, seconds since the epoch
    MEMBER_OU = "phxq-member"

A member certificate's subject is ``CN=<member id>, OU=phxq-member, O=phxq`` (the member id
is e.g. ``store-1``, ``lock-2``, ``consumer``, ``gateway``); it is valid for both TLS server
and client use, and names ``hosts`` (IP addresses or DNS names) as subject alternative names so
clients can check the server's name. Keys are ECDSA P-256: a fast handshake and tiny files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MEMBER_OU: Final = "phxq-member"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str = "phxq cluster CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its private key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phxq"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_member_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    member: str,
    hosts: Iterable[str] = (),
    *,
    days: int = 825,
    not_before: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A member certificate for ``member`` signed by the CA, and its key (PEM).
    ``not_before`` (default: now) with ``days`` sets the validity (tests make expired ones)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an ECDSA key made by make_ca")
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phxq"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, MEMBER_OU),
                    x509.NameAttribute(NameOID.COMMON_NAME, member),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names = _san(hosts)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (replacing a previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def cert_not_after(cert: Path | bytes) -> float:
    """When the (first) certificate in ``cert`` (a PEM file or PEM bytes) expires."""
    pem = cert if isinstance(cert, bytes) else Path(cert).read_bytes()
    parsed = x509.load_pem_x509_certificate(pem)
    return parsed.not_valid_after_utc.timestamp()
