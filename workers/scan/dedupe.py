"""Near-duplicates within a dataset (`vigil scan --dedupe`): files whose PDQ hashes are within a
distance of each other, grouped into clusters (connected components), which dataset builders
ask for before training. Exact range search with the matcher's multi-index hashing."""
from __future__ import annotations

import numpy as np

from workers.index.mih import MultiIndexHamming, to_words


def clusters(pdqs: list[tuple[str, str]], distance: int) -> list[dict]:
    """[{"keys": [...], "size": n}] for every group of two or more, largest first."""
    if len(pdqs) < 2:
        return []
    codes = np.frombuffer(b"".join(bytes.fromhex(h) for _, h in pdqs), np.uint8).reshape(-1, 32)
    index = MultiIndexHamming(256)
    index.add_many(np.arange(len(pdqs), dtype=np.int64), codes)
    qi, handles, _frames, _dist = index.search_arrays(to_words(codes, 4), distance)
    parent = list(range(len(pdqs)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(qi.tolist(), handles.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[str]] = {}
    for i, (key, _) in enumerate(pdqs):
        groups.setdefault(find(i), []).append(key)
    out = [{"keys": sorted(keys), "size": len(keys)} for keys in groups.values() if len(keys) > 1]
    return sorted(out, key=lambda g: (-g["size"], g["keys"][0]))
