"""Retroactive matching (issue 17): how fast a rescan reads and matches the hash history, how
long from a bank import to the last retro decision, and the retro worker's memory.

1. decode + match, in memory: N image history records (random PDQ/pHash plus planted edited
   copies of real photos, whose entries are among the new ones) in batches of 20,000 as the
   worker takes them from Kafka, against 1,000 and 100,000 new entries. Rate = records per CPU
   second of this process (the machine is shared, so wall time is noisier); recall against a
   brute-force check of the planted records.
2. end to end on the embedded broker: 100k and 5M records on the topic, a real `vigil worker
   retro` process, import_file (what `vigil bank import` runs) of 1,000 hashes including the
   planted ones, and the time until the last planted content's retro decision; the worker's
   peak RSS (VmHWM) with half and with all of that history, to show it does not grow with it.
3. the same end to end with 1 and with 2 retro workers splitting one history's 4 partitions
   (1M records; `--fleet N` runs only these rows), with each worker's CPU time.

    python -m benchmarks.bench_retro [--quick] [--fleet RECORDS]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

from workers.bank.model import Bank, Entry
from workers.retro.new_entries import NewEntries
from workers.settings import Settings
from tests.retro_helpers import EDITS, PHOTOS, planted_photos, planted_record
from workers.signals import SignalValue
from workers.stream import history

BATCH = 20_000


def _planted() -> tuple[list[Entry], list[list[SignalValue]], list[str]]:
    """Entries of real photos, and edited copies of them (what the history will carry)."""
    return planted_photos(PHOTOS, bank="new")


def _template(n: int, rng: np.random.Generator) -> np.ndarray:
    """n image records (126 bytes each) as one array, random hashes, uuid event ids."""
    rec = np.zeros((n, 126), np.uint8)
    rec[:, 0], rec[:, 1] = history.VERSION, history.HAS_MD5 | history.HAS_SHA256 | history.UUID_ID
    rec[:, 2] = 1
    rec[:, 16:64] = rng.integers(0, 256, (n, 48), dtype=np.uint8)  # digests
    f = history.FRAMES_AT
    rec[:, f + 4:f + 36] = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    rec[:, f + 36] = 90
    rec[:, f + 37:f + 45] = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    rec[:, f + 45] = 50
    rec[:, 110:126] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    return rec


def _plant(rec: np.ndarray, copy: list[SignalValue]) -> None:
    rec[:] = np.frombuffer(planted_record(copy), np.uint8)


def match_rate(records: int, new_entries: int, planted: tuple, seed: int = 5) -> dict:
    entries, copies, owner = planted
    rng = np.random.default_rng(seed)
    rand = [Entry(f"r-{i}", "new", (SignalValue("pdq", rng.bytes(32).hex(), 100),)) for i in range(new_entries - len(entries))]
    t0 = time.perf_counter()
    index = NewEntries(entries + rand, {"new": Bank("new", "block")}, Settings())
    build_s = time.perf_counter() - t0
    index.match(history.decode_batch([bytes(_template(4, rng)[i]) for i in range(4)]))  # compile / load numba
    cpu = wall = 0.0
    found, want, extra = 0, 0, 0
    every = max(1, records // (len(copies) * 20))  # ~20 planted copies of each edited photo
    done = 0
    while done < records:
        n = min(BATCH, records - done)
        rec = _template(n, rng)
        plant_rows = {}
        for r in range(n):
            if (done + r) % every == every // 2:
                k = ((done + r) // every) % len(copies)
                _plant(rec[r], copies[k])
                plant_rows[r] = owner[k]
        buf = rec.tobytes()
        values = [buf[i * 126:(i + 1) * 126] for i in range(n)]
        c0, w0 = time.process_time(), time.perf_counter()
        hits = index.match(history.decode_batch(values))
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        got = {(h.record, h.entry.entry_id) for h in hits}
        want += len(plant_rows)
        found += sum((r, e) in got for r, e in plant_rows.items())
        extra += sum(1 for r, e in got if plant_rows.get(r) != e)
        done += n
    return {"records": records, "entries": new_entries, "cpu_s": cpu, "wall_s": wall, "rate_cpu": records / cpu,
            "rate_wall": records / wall, "planted": want, "found": found, "other_hits": extra, "build_s": build_s}


def end_to_end(records: int, planted: tuple, retros: int = 1, partitions: int = 3) -> dict:
    """One history of `records` on the embedded broker, `retros` retro workers splitting its
    partitions (workers/retro/members.py), 1,000 hashes imported: the time to the last planted
    content's retro decision, and each worker's CPU time and peak RSS."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    import topics
    from workers.bank.importer import import_file
    from workers.bank.store import BankStore
    from workers.stack.cluster import Cluster
    from workers.stream.kafka import base_config, producer_config

    entries, copies, _ = planted
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-retro-") as tmp:
        settings = Settings(data_dir=str(Path(tmp) / "c"), partitions=partitions, retro_settle_s=1.0)
        with Cluster(settings, hashers=0, matchers=0, retros=retros) as cluster:
            cluster.wait_ready(timeout=120)
            s = cluster.settings
            worker = cluster.workers[0]
            procs = [psutil.Process(w.proc.pid) for w in cluster.workers]
            cpu0 = [sum(pr.cpu_times()[:2]) for pr in procs]
            p = Producer({**producer_config(s), "linger.ms": 50, "batch.size": 1_000_000})
            planted_ids = set()
            every = records // (len(copies) * 4)
            t0 = time.perf_counter()
            hwm_half = None
            for start in range(0, records, BATCH):
                n = min(BATCH, records - start)
                rec = _template(n, rng)
                keys = [f"c-{start + r}" for r in range(n)]
                for r in range(n):
                    if (start + r) % every == every // 2:
                        _plant(rec[r], copies[((start + r) // every) % len(copies)])
                        keys[r] = f"planted-{start + r}"
                        planted_ids.add(keys[r])
                buf = rec.tobytes()
                for r in range(n):
                    while True:
                        try:
                            p.produce(topics.HASH_HISTORY, key=keys[r].encode(), value=buf[r * 126:(r + 1) * 126])
                            break
                        except BufferError:
                            p.poll(0.1)
            assert p.flush(300) == 0
            produce_s = time.perf_counter() - t0
            store = BankStore.from_url(s.redis, actor="bench")
            store.create_bank("new", "block")
            csv = Path(tmp) / "list.csv"
            lines = ["signal,hash"] + [f"pdq,{sv.value}" for e in entries for sv in e.signals if sv.signal == "pdq"]
            lines += [f"pdq,{rng.bytes(32).hex()}" for _ in range(1000 - len(lines) + 1)]
            csv.write_text("\n".join(lines) + "\n")
            watch = Consumer({**base_config(s), "group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False})
            parts = watch.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS].partitions
            watch.assign([TopicPartition(topics.DECISIONS, q, 0) for q in parts])
            t_import = time.perf_counter()
            result = import_file(store, "new", csv, progress=False)
            import_s = time.perf_counter() - t_import
            seen: dict[str, float] = {}
            deadline = time.perf_counter() + 600
            while len(seen) < len(planted_ids) and time.perf_counter() < deadline:
                msg = watch.poll(0.2)
                if msg is not None and not msg.error():
                    d = json.loads(msg.value())
                    if d.get("source") == "retro":
                        seen.setdefault(d["content_id"], time.perf_counter() - t_import)
                if hwm_half is None and seen:
                    hwm_half = _vm(worker.proc.pid, "VmHWM")
            watch.close()
            cpu = [sum(pr.cpu_times()[:2]) - c0 for pr, c0 in zip(procs, cpu0)]
            peak = max(_vm(w.proc.pid, "VmHWM") or 0 for w in cluster.workers)
            rss = _vm(worker.proc.pid, "VmRSS")
    return {"records": records, "retros": retros, "partitions": partitions, "worker_cpu_s": cpu, "produce_s": produce_s, "import_s": import_s, "imported": result.get("added"),
            "planted": len(planted_ids), "found": len(set(seen) & planted_ids), "other": len(set(seen) - planted_ids),
            "last_s": max(seen.values()) if seen else None, "first_s": min(seen.values()) if seen else None,
            "hwm_first_mb": hwm_half, "hwm_mb": peak, "rss_mb": rss}


def _vm(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(quick: bool = False) -> str:
    planted = _planted()
    n = 500_000 if quick else 5_000_000
    rows = [match_rate(n, 1_000, planted), match_rate(n // 5, 100_000, planted)]
    for r in rows:
        print(f"retro: {r}", file=sys.stderr)
    e2es = [end_to_end(n_, planted) for n_ in ((30_000, 60_000) if quick else (100_000, 5_000_000))]
    for e2e in e2es:
        print(f"retro e2e: {e2e}", file=sys.stderr)
    m = 200_000 if quick else 1_000_000
    fleet = [end_to_end(m, planted, retros=k, partitions=4) for k in (1, 2)]
    for e in fleet:
        print(f"retro fleet: {e}", file=sys.stderr)
    out = ["## Retroactive matching (hash history rescan)", "",
           "Decode + match of image history records (126 bytes each) in batches of 20,000, in memory, one thread; "
           "rate per CPU second of the process (`time.process_time`), wall in brackets (shared, loaded machine). "
           f"Planted: edited copies ({', '.join(EDITS)}) of {len(PHOTOS)} real photos whose entries are among the new ones.", "",
           "| history records | new entries | index build | records/s/core (CPU) | records/s (wall) | planted found | other hits |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['records']:,} | {r['entries']:,} | {r['build_s']:.2f} s | {r['rate_cpu']:,.0f} | "
                   f"{r['rate_wall']:,.0f} | {r['found']}/{r['planted']} | {r['other_hits']} |")
    out += ["", "End to end on the embedded broker (tansu, memory-only: a 5M-record history holds ~1 GB of "
            "RAM there): one `vigil worker retro` process, "
            "import_file of 1,000 PDQ hashes (what `vigil bank import` runs) including the planted photos'; "
            "settle window 1 s. Peak RSS at two history sizes shows memory does not grow with the history.", "",
            "| history | import | planted found | other retro decisions | import -> first retro decision | "
            "import -> last | read rate (records / (last - first)) | worker VmHWM at first decision | at the end |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in e2es:
        span = (e["last_s"] or 0) - (e["first_s"] or 0)
        out.append(f"| {e['records']:,} | {e['import_s']:.2f} s | {e['found']}/{e['planted']} | {e['other']} | "
                   f"{e['first_s'] or float('nan'):.1f} s | {e['last_s'] or float('nan'):.1f} s | "
                   f"{e['records'] / span if span > 0 else float('nan'):,.0f}/s | "
                   f"{e['hwm_first_mb'] or 0:.0f} MB | {e['hwm_mb'] or 0:.0f} MB |")
    out += ["", f"The same history of {m:,} records on 4 partitions, rescanned by 1 and by 2 retro workers "
            "(VIGIL_RETRO_MEMBERS; each reads its partitions p % N == i), one run each, on the shared machine. "
            "Rate = records / (import -> last decision), which includes the settle window and index build; "
            "worker CPU = user + system seconds of each retro process over the run.", "",
            "| retro workers | planted found | other | import -> first | import -> last | records/s (wall) | "
            "worker CPU s | records per worker CPU s | peak VmHWM |", "|---|---|---|---|---|---|---|---|---|"]
    for e in fleet:
        cpu = e["worker_cpu_s"]
        out.append(f"| {e['retros']} | {e['found']}/{e['planted']} | {e['other']} | {e['first_s'] or float('nan'):.1f} s | "
                   f"{e['last_s'] or float('nan'):.1f} s | {e['records'] / e['last_s'] if e['last_s'] else float('nan'):,.0f}/s | "
                   f"{' + '.join(f'{c:.1f}' for c in cpu)} | {e['records'] / sum(cpu) if sum(cpu) else float('nan'):,.0f} | "
                   f"{e['hwm_mb'] or 0:.0f} MB |")
    out.append("")
    return "\n".join(out)


def fleet_only(records: int) -> None:
    """Just the 1-against-2-workers rows (`--fleet N`), printed as JSON lines."""
    planted = _planted()
    for k in (1, 2):
        print(json.dumps(end_to_end(records, planted, retros=k, partitions=4)), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fleet", type=int, metavar="RECORDS", help="only the 1 vs 2 retro workers rows, on RECORDS")
    a = ap.parse_args()
    if a.fleet:
        fleet_only(a.fleet)
    else:
        print(run(a.quick))
