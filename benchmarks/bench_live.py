"""Livestream latency: N concurrent streams at 1 fps of real 720p JPEG frames through the real
embedded broker and Redis; some streams carry banked frames. Reports captured_at -> decision
published (p50, p99, max) for the banked frames at each stream count, the largest count this
machine holds with p99 under 1 s, and each worker's CPU time per frame sent (from the kernel's
accounting of the process, while the frames are sent and the probes decided).

    python -m benchmarks.bench_live [--quick] [--seconds 20] [--streams 50,100,200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import psutil

import topics
from workers.stack import samples, transforms
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.stream.client import OutcomeWatcher
from workers.live.streams import LiveFrameProducer
from workers.stack.cluster import Cluster
from workers.settings import Settings

BANKED = ("astronaut", "chelsea", "rocket")
UNRELATED = ("china.jpg", "flower.jpg", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle",
             "retina", "coffee")  # (skimage "cat" is chelsea: not unrelated)
PROBES_PER_SECOND = 3  # fresh streams per second that open on a banked frame: one block each


def _jpeg720(name: str, quality: int = 85) -> bytes:
    img = cv2.resize(samples.photo(name), (1280, 720), interpolation=cv2.INTER_AREA)
    return transforms.encode(img, ".jpg", quality)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def _load(cluster: Cluster, streams: int, seconds: float, frames: list[bytes], banked: list[bytes]) -> dict:
    """Each stream sends one frame per second, staggered across the second; probes open new streams
    on a banked frame. Returns latency figures for the probes' block decisions."""
    watcher = OutcomeWatcher(cluster.settings, watch=(topics.DECISIONS,))
    producer = LiveFrameProducer(cluster.settings)
    run_id = time.time_ns()
    latencies: dict[str, float] = {}
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            for _t, msg in watcher.messages(0.5):
                sid = msg.get("stream_id", "")
                if sid.startswith(f"probe-{run_id}") and msg["decision"] == "block" and "summary" not in msg:
                    latencies.setdefault(sid, msg["latency_ms"]["total"])

    collector = threading.Thread(target=collect)
    collector.start()
    procs = {w.kind: psutil.Process(w.proc.pid) for w in cluster.workers}
    cpu0 = {kind: _cpu_s(p) for kind, p in procs.items()}
    start = time.monotonic()
    sent = probes = 0
    lag_max = 0.0
    for second in range(int(seconds)):
        for i in range(streams):
            due = start + second + i / streams
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            producer.send_frame(f"s-{run_id}-{i}", second, frames[(i + second) % len(frames)])
            sent += 1
            if i % max(1, streams // PROBES_PER_SECOND) == 0 and probes < (second + 1) * PROBES_PER_SECOND:
                producer.send_frame(f"probe-{run_id}-{probes}", 0, banked[probes % len(banked)])
                probes += 1
        producer.producer.poll(0)
    producer.flush()
    deadline = time.monotonic() + 15
    while len(latencies) < probes and time.monotonic() < deadline:
        time.sleep(0.2)
    cpu_ms = {kind: round((_cpu_s(p) - cpu0[kind]) * 1000 / max(1, sent + probes), 2) for kind, p in procs.items()}
    done.set()
    collector.join()
    watcher.close()
    for i in range(streams):
        producer.end_stream(f"s-{run_id}-{i}", int(seconds))
    producer.flush()
    values = list(latencies.values())
    return {"streams": streams, "frames_sent": sent, "probes": probes, "decided": len(values),
            "p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99), "max": max(values, default=float("nan")),
            "generator_behind_ms": round(lag_max * 1000), "hasher_cpu_ms": cpu_ms.get("hasher"),
            "matcher_cpu_ms": cpu_ms.get("matcher")}


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run(quick: bool = False, seconds: float | None = None, counts: list[int] | None = None) -> str:
    seconds = seconds or (10 if quick else 20)
    counts = counts or ([50, 100] if quick else [50, 100, 150, 200, 300])
    frames = [_jpeg720(n) for n in UNRELATED]
    banked = [_jpeg720(n, quality=75) for n in BANKED]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-live-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        settings = Settings(media_roots=(str(media),), data_dir=str(Path(tmp) / "cluster"), partitions=6)
        with Cluster(settings) as cluster:
            store = BankStore.from_url(cluster.settings.redis, actor="bench")
            store.create_bank("live-bench", "block")
            for name in BANKED:
                path = media / f"{name}.png"
                path.write_bytes(transforms.encode(samples.photo(name), ".png"))
                add_media_file(store, "live-bench", path, cluster.settings)
            cluster.wait_ready(timeout=120)
            _load(cluster, 10, 3, frames, banked)  # warm up: group joins, first fetches
            for n in counts:
                print(f"live: {n} streams for {seconds:.0f} s ...", file=sys.stderr, flush=True)
                rows.append(_load(cluster, n, seconds, frames, banked))
    holds = [r["streams"] for r in rows if r["decided"] == r["probes"] and r["p99"] < 1000]
    lines = ["## Livestreams: capture -> decision latency", "",
             f"1 hasher + 1 matcher on the embedded stack; each stream sends one 1280x720 JPEG per second for "
             f"{seconds:.0f} s; {PROBES_PER_SECOND} fresh streams per second open on a banked frame, and the "
             "latency of their block decisions is `decided_at - captured_at` (ms). The load generator shares "
             "the machine's 2 cores.", "",
             "| streams | frames sent | banked probes | decided | p50 ms | p99 ms | max ms | generator behind "
             "| hasher CPU ms/frame | matcher CPU ms/frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['streams']} | {r['frames_sent']} | {r['probes']} | {r['decided']} | {r['p50']:.0f} | "
                     f"{r['p99']:.0f} | {r['max']:.0f} | {r['generator_behind_ms']} ms | {r['hasher_cpu_ms']} | "
                     f"{r['matcher_cpu_ms']} |")
    lines += ["", f"Largest stream count measured with every probe decided and p99 under 1 s: "
                  f"**{max(holds) if holds else 'none'}** (of {', '.join(map(str, counts))}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--streams", help="comma-separated stream counts")
    a = ap.parse_args()
    print(run(a.quick, a.seconds, [int(x) for x in a.streams.split(",")] if a.streams else None))
