"""The rescan's inner loop, compiled: history bytes in place against the few new entries.

Why not the matcher's MultiIndexHamming: that index is built for 10^7 entries and a handful of
queries; a rescan is the reverse, 10^8 queries (history frames) against 10^3-10^5 new entries.
Here each perceptual code is cut into 16-bit chunks; by pigeonhole a code within distance t of
an entry has at least one chunk within r = t // chunks bits of the entry's chunk. At build time
each entry's chunk values are expanded by every flip of <= r bits into a per-chunk table (a
bitmap to reject at once, and a CSR list of entries to verify), so a history frame costs one
bitmap probe per chunk (16 for PDQ) and a full popcount only for the few candidates.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workers.index.mih_kernel import _popcount

CHUNK_BITS = 16
SLOTS = 1 << CHUNK_BITS


def flip_masks16(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most `radius` bits set."""
    m = np.arange(SLOTS, dtype=np.uint32)
    bits = np.unpackbits(m.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1).sum(1)
    return m[bits <= radius]


def build_tables(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """codes (entries, bytes) uint8 -> (bitmap, slot_start, slot_entry) over chunks x 2^16 keys.
    Built one chunk at a time so the peak is (entries x masks) for one chunk, not all of them."""
    n, nbytes = codes.shape
    chunks = nbytes // 2
    values = codes.reshape(n, chunks, 2).astype(np.uint32)
    values = values[:, :, 0] | values[:, :, 1] << 8  # little-endian, as the kernel reads them
    masks = flip_masks16(radius)
    counts = np.zeros(chunks * SLOTS, np.int64)
    lists = []
    for j in range(chunks):
        keys = (values[:, j, None] ^ masks[None, :]).ravel()  # (n * masks) slot values of chunk j
        order = np.argsort(keys, kind="stable")
        lists.append((order // len(masks)).astype(np.int32))
        counts[j * SLOTS:(j + 1) * SLOTS] = np.bincount(keys, minlength=SLOTS)
    slot_start = np.zeros(chunks * SLOTS + 1, np.int32)
    np.cumsum(counts, out=slot_start[1:])
    bitmap = np.packbits(counts > 0, bitorder="little")
    return bitmap, slot_start, np.concatenate(lists) if lists else np.zeros(0, np.int32)


def entry_words(codes: np.ndarray) -> np.ndarray:
    """(entries, bytes) uint8 -> (entries, bytes // 8) uint64 in the kernel's byte order."""
    return np.ascontiguousarray(codes).view("<u8")


@njit(cache=True, nogil=True)
def scan(buf, offs, code_at, nbytes, qual_at, min_q, bitmap, slot_start, slot_entry, words, limits,
         out_row, out_entry, out_dist, start):
    """Frames offs[start:] against the tables; writes (row, entry, distance) hits, one per pair.
    Returns (next row to scan, hits written): it stops early when the output arrays are full."""
    chunks = nbytes // 2
    nwords = nbytes // 8
    n_out = 0
    cap = out_row.shape[0]
    q = np.zeros(nwords, np.uint64)
    for i in range(start, offs.shape[0]):
        if n_out + 64 > cap:
            return i, n_out
        o = offs[i]
        qual = buf[o + qual_at]
        if qual == 255 or qual < min_q:
            continue
        base = o + code_at
        first = n_out
        loaded = False
        for j in range(chunks):
            v = np.int64(buf[base + 2 * j]) | (np.int64(buf[base + 2 * j + 1]) << 8)
            key = j * 65536 + v
            if (bitmap[key >> 3] >> (key & 7)) & 1 == 0:
                continue
            if not loaded:
                for w in range(nwords):
                    x = np.uint64(0)
                    for b in range(8):
                        x |= np.uint64(buf[base + 8 * w + b]) << np.uint64(8 * b)
                    q[w] = x
                loaded = True
            for s in range(slot_start[key], slot_start[key + 1]):
                e = slot_entry[s]
                d = np.int64(0)
                for w in range(nwords):
                    d += np.int64(_popcount(q[w] ^ words[e, w]))
                if d > limits[e]:
                    continue
                dup = False
                for k in range(first, n_out):
                    if out_entry[k] == e:
                        dup = True
                        break
                if not dup and n_out < cap:
                    out_row[n_out] = i
                    out_entry[n_out] = e
                    out_dist[n_out] = d
                    n_out += 1
    return offs.shape[0], n_out


@njit(cache=True, nogil=True)
def scan_digest(buf, starts, flags, flag, at, nbytes, prefixes, order, digests, out_row, out_entry, start):
    """Records' digest at `at` (when `flag` is set) against new entries' digests: binary search on
    the first 8 bytes (sorted `prefixes`, entries `order`), then every byte compared."""
    n_out = 0
    cap = out_row.shape[0]
    m = prefixes.shape[0]
    for i in range(start, starts.shape[0]):
        if n_out + 8 > cap:
            return i, n_out
        if flags[i] & flag == 0:
            continue
        o = starts[i] + at
        p = np.uint64(0)
        for b in range(8):
            p |= np.uint64(buf[o + b]) << np.uint64(8 * b)
        lo, hi = 0, m
        while lo < hi:
            mid = (lo + hi) // 2
            if prefixes[mid] < p:
                lo = mid + 1
            else:
                hi = mid
        while lo < m and prefixes[lo] == p and n_out < cap:
            e = order[lo]
            same = True
            for b in range(nbytes):
                if buf[o + b] != digests[e, b]:
                    same = False
                    break
            if same:
                out_row[n_out] = i
                out_entry[n_out] = e
                n_out += 1
            lo += 1
    return starts.shape[0], n_out
