"""Generate the **test-only** VIHF signing material in ``fixtures/pki/``.

    python tools/make_test_pki.py [OUT_DIR]

Writes ``test-vihf-key.pem`` (RSA 2048, unencrypted) and ``test-vihf-cert.pem`` (self-signed,
CN "RELAIS TEST VIHF - NOT FOR PRODUCTION", valid 2024–2049 so the committed files keep
working). These files are public test material: they prove nothing and must never be
configured against a real DMP, which requires the structure's IGC Santé *cachet* certificate.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["make_test_pki", "KEY_NAME", "CERT_NAME"]

KEY_NAME = "test-vihf-key.pem"
CERT_NAME = "test-vihf-cert.pem"
_NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
_NOT_AFTER = datetime(2049, 12, 31, tzinfo=UTC)


def make_test_pki(out_dir: Path) -> tuple[Path, Path]:
    """Create a fresh key and self-signed certificate in ``out_dir``; return (key, cert) paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Relais test material"),
            x509.NameAttribute(NameOID.COMMON_NAME, "RELAIS TEST VIHF - NOT FOR PRODUCTION"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_path = out_dir / KEY_NAME
    cert_path = out_dir / CERT_NAME
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "fixtures" / "pki"
    for path in make_test_pki(target):
        print(path)
