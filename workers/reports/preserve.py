"""Opt-in preservation of blocked media for law enforcement, encrypted at rest, with a
SHA-256 chain of custody.

18 U.S.C. § 2258A(h) asks US providers to preserve what they report to NCMEC (one year since
2024); elsewhere the rules differ and may forbid keeping it, so this is off unless both
VIGIL_PRESERVE_DIR and VIGIL_PRESERVE_KEY are set. Everything else in vigil still never stores media.

Files are AES-256-GCM in 1 MiB chunks (so a 4 GB video is never held in memory): a header
(magic, 8-byte random nonce prefix), then per chunk a 4-byte length and the ciphertext with its
tag; each chunk's nonce is prefix + counter and its associated data names the record, the chunk
index and whether it is the last, so chunks cannot be reordered, swapped between files or cut off.

custody.jsonl is append-only: each line carries the SHA-256 of the line before it, so an edited,
removed or reordered record breaks every hash after it (verify_chain). Access is recorded there
and on the Redis stream vigil:reports:audit.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workers.ops.logs import now_ms

MAGIC = b"VIGILP1\n"
CHUNK = 1 << 20
CUSTODY = "custody.jsonl"
GENESIS = "0" * 64


class PreserveError(Exception):
    """Preservation or access refused: no key, a wrong key, a broken chain, a tampered file."""


def new_key() -> str:
    """A fresh key for VIGIL_PRESERVE_KEY (urlsafe base64 of 32 random bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _key_bytes(key: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise PreserveError("VIGIL_PRESERVE_KEY must be urlsafe base64 of 32 bytes (`vigil report keygen`)")
    return raw


def key_id(key: str) -> str:
    """Names the key in custody records without revealing it, so a wrong key is refused up front."""
    return hmac.new(_key_bytes(key), b"vigil-preserve-key-id", hashlib.sha256).hexdigest()[:16]


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


class PreserveStore:
    def __init__(self, directory: str | Path, key: str):
        self.dir = Path(directory)
        self.key = key
        self.aead = AESGCM(_key_bytes(key))
        self.key_id = key_id(key)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- custody chain -------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        path = self.dir / CUSTODY
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        prev = self.records()
        body = {**record, "seq": len(prev), "prev_sha256": prev[-1]["sha256"] if prev else GENESIS}
        body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
        with open(self.dir / CUSTODY, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(body, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return body

    def verify_chain(self) -> list[dict[str, Any]]:
        prev = GENESIS
        records = self.records()
        for i, r in enumerate(records):
            body = {k: v for k, v in r.items() if k != "sha256"}
            if r.get("seq") != i or r.get("prev_sha256") != prev or \
                    hashlib.sha256(_canonical(body)).hexdigest() != r.get("sha256"):
                raise PreserveError(f"custody chain broken at record {i}")
            prev = r["sha256"]
        return records

    def preserved(self, event_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records() if r["action"] == "preserved" and r["event_id"] == event_id), None)

    # -- files ---------------------------------------------------------------------------------
    def preserve(self, chunks: Iterator[bytes], decision: dict[str, Any], media_uri: str, actor: str) -> dict[str, Any]:
        """Encrypt the file's bytes into the store and append its custody record."""
        done = self.preserved(decision["event_id"])
        if done is not None:
            return done  # a replayed decision: preserved once
        record_id = hashlib.sha256(f"{decision['event_id']}:{secrets.token_hex(8)}".encode()).hexdigest()[:32]
        name = f"{record_id}.enc"
        plain, cipher, size = hashlib.sha256(), hashlib.sha256(), 0
        prefix = secrets.token_bytes(8)
        tmp = self.dir / (name + ".tmp")
        md5, sha1 = hashlib.md5(), hashlib.sha1()
        with open(tmp, "wb") as out:
            header = MAGIC + prefix
            out.write(header)
            cipher.update(header)
            pending: bytes | None = None
            index = 0
            for data in _rechunk(chunks):
                if pending is not None:
                    index = self._write_chunk(out, cipher, prefix, record_id, index, pending, last=False)
                pending = data
                plain.update(data), md5.update(data), sha1.update(data)
                size += len(data)
            self._write_chunk(out, cipher, prefix, record_id, index, pending or b"", last=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.dir / name)
        m = next((x for x in decision.get("matches", ()) if x.get("action") == "block"), {})
        return self.append({
            "action": "preserved", "at_ms": now_ms(), "actor": actor, "record_id": record_id, "file": name,
            "event_id": decision["event_id"], "content_id": decision["content_id"], "media_uri": media_uri,
            "bank": m.get("bank"), "label": m.get("label"), "entry_id": m.get("entry_id"),
            "bytes": size, "plaintext_sha256": plain.hexdigest(), "plaintext_md5": md5.hexdigest(),
            "plaintext_sha1": sha1.hexdigest(), "ciphertext_sha256": cipher.hexdigest(), "key_id": self.key_id,
            "cipher": "AES-256-GCM, 1 MiB chunks"})

    def _write_chunk(self, out, cipher, prefix: bytes, record_id: str, index: int, data: bytes, last: bool) -> int:
        nonce = prefix + struct.pack(">I", index)
        blob = self.aead.encrypt(nonce, data, f"{record_id}:{index}:{int(last)}".encode())
        framed = struct.pack(">I", len(blob)) + blob
        out.write(framed)
        cipher.update(framed)
        return index + 1

    def open(self, record: dict[str, Any], actor: str, purpose: str) -> bytes:
        """The decrypted file of a custody record; the access is appended to the chain first."""
        if record.get("key_id") != self.key_id:
            raise PreserveError("wrong preservation key: this record was encrypted with another key")
        self.verify_chain()
        self.append({"action": "accessed", "at_ms": now_ms(), "actor": actor, "purpose": purpose,
                     "record_id": record["record_id"], "event_id": record["event_id"],
                     "content_id": record["content_id"]})
        raw = (self.dir / record["file"]).read_bytes()
        if hashlib.sha256(raw).hexdigest() != record["ciphertext_sha256"]:
            raise PreserveError(f"{record['file']} does not match its custody record (altered)")
        if not raw.startswith(MAGIC):
            raise PreserveError(f"{record['file']} is not a vigil preservation file")
        prefix, pos, index, parts = raw[len(MAGIC):len(MAGIC) + 8], len(MAGIC) + 8, 0, []
        while pos < len(raw):
            (n,) = struct.unpack(">I", raw[pos:pos + 4])
            blob = raw[pos + 4:pos + 4 + n]
            pos += 4 + n
            last = pos >= len(raw)
            try:
                parts.append(self.aead.decrypt(prefix + struct.pack(">I", index), blob,
                                               f"{record['record_id']}:{index}:{int(last)}".encode()))
            except InvalidTag:
                raise PreserveError("wrong preservation key, or the file was altered") from None
            index += 1
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != record["plaintext_sha256"]:
            raise PreserveError("decrypted media does not match its custody record")
        return data


def _rechunk(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buf = b""
    for c in chunks:
        buf += c
        while len(buf) >= CHUNK:
            yield buf[:CHUNK]
            buf = buf[CHUNK:]
    if buf:
        yield buf
