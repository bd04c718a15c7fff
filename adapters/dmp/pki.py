"""Self-signed signing material for platforms that have no cachet certificate configured.

Only for the embedded default and test platforms: a real PFI signs the VIHF with its
structure's cachet certificate (settings ``vihf_key`` / ``vihf_cert``).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["ensure_signing_material"]


def ensure_signing_material(directory: Path, *, now: dt.datetime | None = None) -> tuple[str, str]:
    """Return (key.pem, cert.pem) in ``directory``, creating a 2048-bit RSA pair once."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "vihf-key.pem", directory / "vihf-cert.pem"
    if key_path.exists() and cert_path.exists():
        return str(key_path), str(cert_path)
    now = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Relais test platform"),
        x509.NameAttribute(NameOID.COMMON_NAME, "relais-self-signed-vihf"),
    ])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)
