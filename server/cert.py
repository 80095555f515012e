"""`seealoud cert`: a self-signed certificate for the laptop's LAN address.

Phone browsers give camera and microphone only to secure (https) pages, so a
phone on the home network needs the laptop to speak TLS with a certificate it
trusts. The certificate is its own authority (CA:TRUE), so it can be installed
on iOS (as a profile) and Android (as a CA certificate); it names the laptop's
LAN addresses, its host name and localhost, and lasts 825 days (iOS's limit).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path


class CertError(Exception):
    """The certificate could not be made; the message says why."""


def lan_addresses() -> list[str]:
    """This machine's outward-facing IPv4 address (no packet is sent), plus loopback."""
    found = ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP connect: picks a route, sends nothing
            address = probe.getsockname()[0]
            if address not in found:
                found.insert(0, address)
        except OSError:
            pass
    return found


def make_certificate(out_dir: Path, *, names: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (mode 600) to ``out_dir``; return their paths."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise CertError(
            "making a certificate needs cryptography: pip install 'seealoud[tls]'"
        ) from exc
    hosts = list(
        dict.fromkeys([*(names or []), *lan_addresses(), socket.gethostname(), "localhost"])
    )
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"SeeAloud on {hosts[0]}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SeeAloud (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.pem", out_dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path
