"""The multi-index probe loop, compiled: one pass per query from chunk values to verified hits.

Why compiled: at 10M rows a PDQ query reads ~5,500 random cache lines (slots, overflow, codes).
numpy does each step as a pass over (batch x probes) temporaries and cannot prefetch, so the code
reads wait on DRAM one out-of-order window at a time. Here the per-query buffers stay in L1/L2
and the overflow and code reads are prefetched a few candidates ahead: 1.8x the queries per core
of the numpy version on the same 10M PDQ index, batches of 32 (median of 10 interleaved rounds;
the closing note of issue 6); 4,858-5,902 q/s/core for 10M PDQ in benchmarks/bench_bank.py runs.

Compiled on the first call in a process (warm(); ~5 s the first time on a machine), then loaded
from numba's cache (next to this file, or NUMBA_CACHE_DIR) in ~0.5 s.
"""
from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EMPTY = 0xFFFFFFFF  # slot of an empty bucket
MULTI = 0x80000000  # slot flag: the rest is where the bucket's [count, rows...] start in `overflow`
AHEAD = 16  # prefetch distance in candidates: measured best of 8/16/24/32 at 10M


@intrinsic
def _popcount(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@intrinsic
def _prefetch(typingctx, arr, i):
    """Hint the cache line of arr's element i (flat index) into every cache level."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        # (address, read, locality 3 = keep in all levels, data cache)
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p),
                          ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, i), codegen


@njit(inline="always")
def _chunk_value(q: np.ndarray, i: int, lo: int, width: int) -> int:
    """Bits [lo, lo+width) of query i, bit 0 the most significant of word 0: mih.chunk_values for
    one query (done here, numpy's dozen small passes per chunk cost more than a batch-1 probe)."""
    word = lo >> 6
    end = (lo & 63) + width
    if end <= 64:
        v = q[i, word] >> np.uint64(64 - end)
    else:  # straddles two words
        spill = end - 64
        v = (q[i, word] << np.uint64(spill)) | (q[i, word + 1] >> np.uint64(64 - spill))
    return np.int64(v & np.uint64((1 << width) - 1))


@njit(cache=True, nogil=True, boundscheck=False)
def probe(slots: np.ndarray, overflow: np.ndarray, codes: np.ndarray, alive: np.ndarray, q: np.ndarray,
          chunks: np.ndarray, masks: np.ndarray, chunk_of: np.ndarray, max_distance: int,
          out_q: np.ndarray, out_r: np.ndarray, out_d: np.ndarray) -> int:
    """Every live row within max_distance of each query, found through one segment's chunk tables
    (see mih_segment.Segment), written as (query, row, distance) to out_*; returns how many there are. A
    row found through several chunks repeats. Past the outputs' length hits are counted, not
    written: the caller calls again with room for them all. (Growing the outputs in here, i.e.
    reassigning arrays inside the loop, halved the rate when measured, likely from the reference
    counting numba then keeps in the loop.)

    chunks: (chunks, 3) each chunk's first bit, width and first bucket in `slots`;
    masks, chunk_of: every probe as (flip mask, chunk it flips), as mih_segment.Segment.plan builds them.
    """
    nq, words = q.shape
    n_probes = masks.shape[0]
    flat = codes.ravel()
    bucket = np.empty(n_probes, np.int64)
    slot = np.empty(n_probes, np.uint32)
    heads = np.empty(n_probes, np.int64)
    counts = np.empty(n_probes, np.int64)
    cand = np.empty(2 * n_probes + 64, np.int64)
    cap = out_q.shape[0]
    found = 0
    key = np.empty(chunks.shape[0], np.int64)
    for i in range(nq):
        for c in range(chunks.shape[0]):  # widths descend, so OR-ing the base in equals adding it
            key[c] = _chunk_value(q, i, chunks[c, 0], chunks[c, 1]) | chunks[c, 2]
        for p in range(n_probes):
            bucket[p] = key[chunk_of[p]] ^ masks[p]
        for p in range(n_probes):  # independent loads: the out-of-order core overlaps them
            slot[p] = slots[bucket[p]]
        nc = 0
        nm = 0
        for p in range(n_probes):  # branch-free split: a bucket's only row, or its overflow head
            s = slot[p]
            cand[nc] = s
            nc += s < MULTI
            heads[nm] = s ^ MULTI
            nm += (s != EMPTY) & (s >= MULTI)
        total = nc
        for j in range(nm):
            if j + AHEAD < nm:
                _prefetch(overflow, heads[j + AHEAD])
            counts[j] = overflow[heads[j]]
            total += counts[j]
        if total > cand.shape[0]:
            grown = np.empty(2 * total, np.int64)
            grown[:nc] = cand[:nc]
            cand = grown
        for j in range(nm):  # the rows follow their count: mostly the line just read
            h = heads[j] + 1
            for k in range(counts[j]):
                cand[nc] = overflow[h + k]
                nc += 1
        q0 = q[i, 0]  # the query's words, held across its candidates
        q1 = q[i, 1] if words > 1 else np.uint64(0)
        q2 = q[i, 2] if words > 2 else np.uint64(0)
        q3 = q[i, 3] if words > 3 else np.uint64(0)
        for j in range(nc):
            if j + AHEAD < nc:
                _prefetch(flat, cand[j + AHEAD] * words)
            r = cand[j]
            d = _popcount(codes[r, 0] ^ q0)
            if words > 1:
                d += _popcount(codes[r, 1] ^ q1)
            if words > 2:
                d += _popcount(codes[r, 2] ^ q2)
            if words > 3:
                d += _popcount(codes[r, 3] ^ q3)
            if d <= max_distance and alive[r]:
                if found < cap:
                    out_q[found] = i
                    out_r[found] = r
                    out_d[found] = d
                found += 1
    return found


def warm() -> None:
    """Compile (or load from numba's cache) before serving, so no decision waits for it."""
    slots = np.full(2, EMPTY, np.uint32)
    out = np.empty(1, np.int64)
    probe(slots, np.zeros(1, np.uint32), np.zeros((1, 1), np.uint64), np.ones(1, np.bool_),
          np.zeros((1, 1), np.uint64), np.array([[0, 1, 0]], np.int64), np.zeros(1, np.int64),
          np.zeros(1, np.int64), 0, out, out.copy(), out.copy())
