"""A small certificate authority for sites without one of their own: ``poold tls init``.

It writes into one directory:

- ``ca.pem``: the CA certificate, what agents and the CLI verify the daemon against (their
  ``ca_file``); copy it to every node and user;
- ``ca-key.pem``: the CA's private key (mode 0600), needed only to make certificates;
- ``server.pem``, ``server-key.pem`` (mode 0600): the daemon's certificate for the host names
  and addresses given, signed by the CA (``server.tls_cert`` and ``server.tls_key``).

Run again on the same directory, it keeps the CA and replaces the server certificate and
key: how a certificate is renewed, or given other names, without touching a node. Keys are
ECDSA P-256; the CA is valid ten years, a server certificate ``days`` (default 365).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca-key.pem", "server.pem", "server-key.pem"


class TlsError(ValueError):
    """A CA or certificate that cannot be made as asked; the message says why."""


@dataclass
class Made:
    directory: Path
    ca_made: bool  # False: the directory's CA was kept
    hosts: list[str]
    not_after: datetime  # of the server certificate

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def key(self) -> Path:
        return self.directory / SERVER_KEY


def init(directory: Path, hosts: list[str], days: int = 365) -> Made:
    """A CA in ``directory`` (kept when there is one) and a new server certificate for
    ``hosts`` (DNS names or IP addresses), valid ``days``."""
    if not hosts:
        raise TlsError("name at least one host the daemon is reached by (--host)")
    if not 1 <= days <= CA_DAYS:
        raise TlsError(f"a server certificate is valid between 1 and {CA_DAYS} days")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ca_made = not (directory / CA_CERT).exists()
    if ca_made:
        if (directory / CA_KEY).exists():
            raise TlsError(f"{directory / CA_KEY} exists without {CA_CERT}: remove it, or put the CA certificate back")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key, now)
        _write(directory / CA_KEY, _key_pem(ca_key), 0o600)
        _write(directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    else:
        ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_certificate(key, hosts, ca_cert, ca_key, now, days)
    _write(directory / SERVER_KEY, _key_pem(key), 0o600)
    _write(directory / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Made(directory, ca_made, list(hosts), cert.not_valid_after_utc)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poold CA"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "poold")])
    public = key.public_key()
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey, hosts: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
    now: datetime, days: int,
) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise TlsError(f"{exc.filename} is missing: the CA's certificate and key go together") from None
    except ValueError as exc:
        raise TlsError(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsError(f"{directory / CA_KEY} is not the key of {directory / CA_CERT}")
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``, the file created with ``mode`` (a key is never readable by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)  # whatever the umask took away from a certificate's 0644
    os.replace(tmp, path)
