"""Test media with real provenance: real photos signed with c2pa-python's Builder by a test CA made
here with `cryptography` (the library's documented test flow; nothing fetched), plus XMP- and
PNG-text-marked copies the way generators write them, and broken manifests."""
from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from functools import lru_cache

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

from workers.stack import samples, transforms

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATOR = "vigil-test-diffusion"


@dataclass(frozen=True)
class TestCA:
    ca_pem: bytes
    chain_pem: bytes  # signer then CA
    key_pem: bytes


@lru_cache(maxsize=1)
def test_ca() -> TestCA:
    """A root CA and a C2PA signing certificate under it (digitalSignature, emailProtection EKU)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vigil tests")])

    def usage(**on: bool) -> x509.KeyUsage:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                     encipher_only=False, decipher_only=False)
        return x509.KeyUsage(**{**flags, **on})

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    valid = dict(not_valid_before=now - datetime.timedelta(days=1), not_valid_after=now + datetime.timedelta(days=30))
    ca = (x509.CertificateBuilder(**valid).subject_name(name("vigil test CA")).issuer_name(name("vigil test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder(**valid).subject_name(name(GENERATOR)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return TestCA(ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem),
                  key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def manifest(source_type: str = "trainedAlgorithmicMedia", action: str = "c2pa.created") -> dict:
    return {"claim_generator_info": [{"name": GENERATOR, "version": "1.0"}], "title": "generated",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": action, "digitalSourceType": IPTC + source_type, "softwareAgent": {"name": "Test Diffusion 1"}}]}}]}


def sign(data: bytes, mime: str, manifest_json: dict, parent: tuple[bytes, str] | None = None) -> bytes:
    """The bytes with a C2PA manifest embedded, signed by test_ca(); parent adds an ingredient."""
    ca = test_ca()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.key_pem, None))
    with c2pa.Builder(manifest_json) as builder:
        if parent is not None:
            builder.add_ingredient({"title": "parent", "relationship": "parentOf", "label": "parent-1"},
                                   parent[1], io.BytesIO(parent[0]))
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def photo_bytes(name: str, ext: str = ".jpg", **save: object) -> bytes:
    """A real photo encoded; with save options (xmp=, pnginfo=, exif=) written by Pillow."""
    img = samples.photo(name)
    if not save:
        return transforms.encode(img, ext, 90)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[ext], **save)
    return buf.getvalue()


def xmp_packet(source_type: str) -> bytes:
    """An XMP packet carrying the IPTC digitalSourceType, as Google's and Meta's generators write it."""
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            b'Iptc4xmpExt:DigitalSourceType="' + (IPTC + source_type).encode() + b'"/></rdf:RDF></x:xmpmeta>')


def sd_webui_png(name: str) -> bytes:
    """A PNG with the `parameters` text chunk the Stable Diffusion web UIs write."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    return photo_bytes(name, ".png", pnginfo=info)


def edited_after_signing(signed: bytes) -> bytes:
    """The signed JPEG with pixels changed and the manifest kept: a hash mismatch."""
    out = bytearray(signed)
    at = len(out) - 300  # inside the entropy-coded scan, before EOI; never a marker or its stuffing
    while out[at] in (0x00, 0xFE, 0xFF) or out[at - 1] == 0xFF:
        at -= 1
    out[at] ^= 0x01
    return bytes(out)


def malformed_manifest(signed: bytes) -> bytes:
    """The signed JPEG with its JUMBF manifest store cut: c2pa cannot read it."""
    at = signed.find(b"c2pa")
    out = bytearray(signed)
    out[at + 50:at + 400] = b"\x00" * 350
    return bytes(out)
