"""Content Credentials: the tests sign a fixture themselves with c2pa-python and a test
certificate chain made here, then check valid, tampered-signature and altered-content files."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imgverify
from imgverify.cli import app
from imgverify.media.provenance import read_credentials

c2pa = pytest.importorskip("c2pa")
crypto = pytest.importorskip("cryptography")

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "fixtures" / "examples" / "viral_space_repost.jpg"


def _chain() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgverify test CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imgverify tests")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(True), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Newsroom Signer"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Newsroom")])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, key_pem


@pytest.fixture(scope="module")
def signed() -> bytes:
    pem, key_pem = _chain()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=pem,
                                                       private_key=key_pem, ta_url=None))
    manifest = {
        "claim_generator_info": [{"name": "imgverify-tests", "version": "1.0"}],
        "title": "signed.jpg",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType":
             "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"},
            {"action": "c2pa.cropped"}]}}],
    }
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, "image/jpeg",
                                            io.BytesIO(SOURCE.read_bytes()), out)
    return out.getvalue()


def test_valid_credentials(signed: bytes) -> None:
    cc = read_credentials(signed, "JPEG")
    assert cc is not None and cc.present
    assert cc.signature_valid and cc.content_intact
    assert cc.signer and "Test Newsroom" in cc.signer
    assert cc.claim_generator and "imgverify-tests" in cc.claim_generator
    assert "cropped" in cc.actions and "created" in cc.actions
    assert cc.trusted is False  # our test CA is on no trust list, and we say so
    result = imgverify.check(signed, imgverify.Archive.default())
    assert result.verdict == "likely_recycled"  # credentials do not hide a recycled photo
    assert result.content_credentials and result.content_credentials["signature_valid"]
    assert result.claim_checks[0]["check"] == "content_credentials"
    assert "signature and content hash validate" in result.claim_checks[0]["finding"]


def test_tampered_signature_is_reported(signed: bytes) -> None:
    label = signed.find(b"c2pa.signature")
    assert label > 0
    broken = None
    # flip bytes near the end of the signature box until the claim signature stops verifying
    for offset in range(label + 40, min(len(signed), label + 4000), 7):
        data = bytearray(signed)
        data[offset] ^= 0x01
        cc = read_credentials(bytes(data), "JPEG")
        if cc is not None and cc.present and cc.signature_valid is False:
            broken = cc
            break
    assert broken is not None, "could not produce a broken signature"
    assert "DOES NOT VALIDATE" in broken.summary() or broken.error


def test_content_changed_after_signing(signed: bytes) -> None:
    data = bytearray(signed)
    data[-2000] ^= 0xFF  # inside the JPEG scan data, after the manifest
    cc = read_credentials(bytes(data), "JPEG")
    assert cc is not None and cc.present
    assert cc.content_intact is False
    assert "CHANGED AFTER SIGNING" in cc.summary()
    r = imgverify.check(bytes(data), imgverify.Archive.default())
    assert r.claim_checks[0]["strength"] == "strong"


def test_no_credentials_is_normal() -> None:
    cc = read_credentials(SOURCE.read_bytes(), "JPEG")
    assert cc is not None and not cc.present
    r = imgverify.check(SOURCE, imgverify.Archive.default())
    assert r.content_credentials is not None and not r.content_credentials["present"]
    assert all(f["check"] != "content_credentials" for f in r.claim_checks)


def test_html_report_shows_credentials(signed: bytes, tmp_path: Path) -> None:
    src = tmp_path / "signed.jpg"
    src.write_bytes(signed)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["check", str(src), "--format", "html", "--out", str(out)])
    assert res.exit_code == 0
    html = out.read_text()
    assert "Content Credentials (C2PA)" in html and "Test Newsroom Signer" in html
