"""End-to-end throughput and latency of the real pipeline on the embedded stack.

Real photos (benchmarks/media.py) cropped to 1280x720 and JPEG-encoded, each upload a distinct
file; a quarter of the photos are banked so both allow and block paths run. Per configuration
(hashers x matchers) the embedded broker, redis-server and worker processes are started, then:

  burst: N uploads submitted at once -> sustained uploads/s (first submit to last decision) and
         CPU seconds per upload of every process (psutil), the capacity model's input;
  paced: uploads at half the burst rate for a fixed time -> decision latency p50/p99/max and the
         mean of each stage, from the decisions' own latency_ms (submit -> decision published);
  cached: the paced files uploaded again, as new events at the same pace -> the latency of a
         decision from the decision cache (same SHA-256, same bank version: no decode, no match).

hash_cpu_ms shows why workers pin BLAS/OpenMP and OpenCV to one thread each.
Everything (broker, Redis, workers, this client) shares the machine's cores, so the figures
are a floor for a deployment where each runs on its own.
Run: python -m benchmarks.bench_pipeline [--quick]
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import psutil

from benchmarks import media
from workers.stack import transforms
from workers.bank.model import Entry, entry_id_for_file
from workers.bank.store import BankStore
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.signals.hashing import hash_media
from workers.stack.cluster import Cluster
from workers.settings import Settings

WIDTH, HEIGHT = 1280, 720
STAGES = ("queue", "fetch", "decode", "hash", "match")


def to_720p(rgb: np.ndarray) -> np.ndarray:
    """Scale to cover 1280x720, then centre-crop: a 720p frame without distortion."""
    h, w = rgb.shape[:2]
    scale = max(WIDTH / w, HEIGHT / h)
    img = cv2.resize(rgb, (max(WIDTH, round(w * scale)), max(HEIGHT, round(h * scale))), interpolation=cv2.INTER_AREA)
    y, x = (img.shape[0] - HEIGHT) // 2, (img.shape[1] - WIDTH) // 2
    return np.ascontiguousarray(img[y:y + HEIGHT, x:x + WIDTH])


def bank_originals(folder: Path) -> list[Path]:
    """The first quarter of the photos, as lossless 720p originals to bank."""
    photos = [to_720p(p) for p in media.photos().values()]
    out = []
    for i, img in enumerate(photos[: max(1, len(photos) // 4)]):
        p = folder / f"bank-{i}.png"
        p.write_bytes(transforms.encode(img, ".png"))
        out.append(p)
    return out


def write_uploads(folder: Path, start: int, n: int) -> list[Path]:
    """Uploads number start..start+n-1, each a distinct 720p JPEG: the photos in turn, each
    round shifted by a pixel more and at another JPEG quality, so no two share bytes."""
    photos = [to_720p(p) for p in media.photos().values()]
    out = []
    for i in range(start, start + n):
        img = photos[i % len(photos)]
        round_ = i // len(photos)
        if round_:
            img = np.roll(img, round_, axis=1)
        p = folder / f"up-{i:05d}.jpg"
        p.write_bytes(transforms.encode(img, ".jpg", 95 - (round_ * 3) % 30))
        out.append(p)
    return out


@dataclass
class Phase:
    uploads: int
    seconds: float
    latencies_ms: list[float]
    decisions: dict[str, int]
    stage_ms: dict[str, float] = field(default_factory=dict)
    bytes_mean: float = 0.0  # mean size of the uploaded files
    cpu_s: dict[str, float] = field(default_factory=dict)  # process kind -> CPU seconds
    load: float = 0.0  # 1-minute load average when the phase ended: other work on the machine shows here
    from_cache: int = 0  # decisions whose notes say they came from the decision cache

    @property
    def rate(self) -> float:
        return self.uploads / self.seconds

    def q(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, max(0, round(p * len(xs)) - 1))]


def _processes(cluster: Cluster) -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {"broker": [], "redis": []}
    if cluster.services.broker and cluster.services.broker.proc:
        out["broker"].append(psutil.Process(cluster.services.broker.proc.pid))
    if cluster.services.redis_server and cluster.services.redis_server.proc:
        out["redis"].append(psutil.Process(cluster.services.redis_server.proc.pid))
    for w in cluster.workers:
        out.setdefault(w.kind, []).append(psutil.Process(w.proc.pid))
    return out


def _cpu(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for kind, ps in procs.items():
        total = 0.0
        for p in ps:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        out[kind] = total
    out["client (this process)"] = sum(psutil.Process().cpu_times()[:2])
    return out


def _submit(settings: Settings, files: list[Path], pace_s: float = 0.0, timeout: float = 300) -> Phase:
    watcher = OutcomeWatcher(settings)
    producer = UploadProducer(settings)
    events = {}
    start = time.monotonic()
    for i, f in enumerate(files):
        if pace_s:
            delay = start + i * pace_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        e = upload_event(f)
        events[e["event_id"]] = e
        producer.submit(e)
    producer.flush()
    outcomes = watcher.wait_for(set(events), timeout=timeout)
    watcher.close()
    if len(outcomes) < len(events):
        raise RuntimeError(f"{len(events) - len(outcomes)} of {len(events)} uploads undecided after {timeout}s")
    decided = [m for t, m in outcomes.values() if t == "moderation.decisions"]
    if len(decided) < len(events):
        raise RuntimeError(f"{len(events) - len(decided)} uploads were dead-lettered")
    first_submit = min(e["submitted_at_ms"] for e in events.values())
    last_decision = max(m["decided_at_ms"] for m in decided)
    counts: dict[str, int] = {}
    for m in decided:
        counts[m["decision"]] = counts.get(m["decision"], 0) + 1
    stages = {s: statistics.fmean(m["latency_ms"].get(s, 0.0) for m in decided) for s in STAGES}
    return Phase(len(files), (last_decision - first_submit) / 1000, [m["latency_ms"]["total"] for m in decided],
                 counts, stages, bytes_mean=statistics.fmean(f.stat().st_size for f in files),
                 load=psutil.getloadavg()[0],
                 from_cache=sum(any("cache" in n for n in m.get("notes", ())) for m in decided))


def measure(hashers: int, matchers: int, burst: int, paced_seconds: float, folder: Path) -> tuple[Phase, Phase, Phase]:
    originals = bank_originals(folder)
    warmup, uploads = write_uploads(folder, 0, 12), write_uploads(folder, 12, burst)
    settings = Settings(media_roots=(str(folder),), actor="bench-pipeline", log_level="WARNING")
    with Cluster(settings, hashers=hashers, matchers=matchers) as cluster:
        s = cluster.settings
        store = BankStore.from_url(s.redis, actor="bench-pipeline")
        store.create_bank("bench", "block")
        for p in originals:
            r = hash_media(p.read_bytes(), s)
            sha = next(v.value for v in r.signals if v.signal == "sha256")
            store.add_entries("bench", [Entry(entry_id_for_file(sha), "bench", tuple(r.signals), media_type="image")])
        cluster.wait_ready(timeout=120)
        _submit(s, warmup)  # warm-up: group joins, first produce, code paths loaded
        procs = _processes(cluster)
        before = _cpu(procs)
        burst_phase = _submit(s, uploads)
        after = _cpu(procs)
        burst_phase.cpu_s = {k: after[k] - before[k] for k in after}
        rate = burst_phase.rate / 2
        paced_files = write_uploads(folder, 12 + burst, max(20, int(rate * paced_seconds)))
        paced = _submit(s, paced_files, pace_s=1 / rate)
        cached = _submit(s, paced_files, pace_s=1 / rate)  # the same bytes again: the decision cache
    return burst_phase, paced, cached


def hash_cpu_ms(uploads: int = 24) -> dict[str, float]:
    """CPU ms per 720p JPEG of hash_media in this process, with the BLAS/OpenMP and OpenCV thread
    pools as they come, then after workers.signals.limit_native_threads() (what every worker
    calls at start). Run last: the limit cannot be undone in this process."""
    from workers.signals import limit_native_threads

    settings = Settings()
    datas = [transforms.encode(to_720p(p), ".jpg", 90) for p in list(media.photos().values())[:8]]

    def cost() -> float:
        for d in datas:
            hash_media(d, settings)
        c0 = time.process_time()
        for i in range(uploads):
            hash_media(datas[i % len(datas)], settings)
        return (time.process_time() - c0) * 1000 / uploads

    out = {"thread pools as they come": cost()}
    limit_native_threads()
    out["after limit_native_threads() (as workers run)"] = cost()
    return out


def run(quick: bool = False) -> str:
    burst, paced_s = (120, 8.0) if quick else (400, 25.0)
    cores = len(psutil.Process().cpu_affinity() or []) or psutil.cpu_count()
    configs = [(1, 1)] if quick else [(1, 1), (2, 1)]
    results: dict[str, tuple[Phase, Phase, Phase]] = {}
    for hashers, matchers in configs:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-pipeline-") as d:
            results[f"{hashers} x {matchers}"] = measure(hashers, matchers, burst, paced_s, Path(d))
    hash_cpu = hash_cpu_ms()

    lines = ["## Pipeline end to end (bench_pipeline)", "",
             f"Embedded tansu broker + redis-server + workers on this machine ({cores} cores, shared by all of "
             f"them and the client). 1280x720 JPEG uploads of real photos, each a distinct file; "
             f"burst = {burst} uploads submitted at once; paced = half the burst rate for {paced_s:.0f} s. "
             "Latency is submit -> decision published, from each decision's latency_ms. Configurations are "
             "hashers x matchers (each hasher runs VIGIL_HASHER_THREADS=2 threads).", "",
             "| config | burst uploads/s | burst p50 / p99 / max ms | paced uploads/s "
             "| paced p50 / p99 / max ms | decisions (burst) |",
             "|---|---|---|---|---|---|"]
    for label, (b, p, _) in results.items():
        lines.append(f"| {label} | {b.rate:.1f} | {b.q(0.5):.0f} / {b.q(0.99):.0f} / {max(b.latencies_ms):.0f} "
                     f"| {p.rate:.1f} | {p.q(0.5):.0f} / {p.q(0.99):.0f} / {max(p.latencies_ms):.0f} "
                     f"| {', '.join(f'{k} {v}' for k, v in sorted(b.decisions.items()))} |")
    lines += ["", "Mean time per stage in the paced run (ms). queue = submit -> a hasher thread starts it; "
              "hops = the rest of the total: hasher produce -> Kafka -> matcher consume -> decision produced.", "",
              "| config | " + " | ".join(STAGES) + " | hops | total mean | load avg (1 min) |",
              "|---|" + "---|" * (len(STAGES) + 3)]
    for label, (_, p, _) in results.items():
        total = statistics.fmean(p.latencies_ms)
        lines.append(f"| {label} | " + " | ".join(f"{p.stage_ms[s]:.1f}" for s in STAGES)
                     + f" | {total - sum(p.stage_ms.values()):.1f} | {total:.1f} | {p.load:.1f} |")
    lines += ["", "Decision cache: the paced run's files uploaded again as new events at the same pace (identical "
              "bytes, unchanged bank: decided by the hasher from the cache, without decoding), against the paced "
              "run itself:", "", "| config | decided from the cache | cached p50 / p99 / max ms | "
              "paced (decoded, matched) p50 / p99 / max ms |", "|---|---|---|---|"]
    for label, (_, p, c) in results.items():
        lines.append(f"| {label} | {c.from_cache} of {c.uploads} | {c.q(0.5):.0f} / {c.q(0.99):.0f} / "
                     f"{max(c.latencies_ms):.0f} | {p.q(0.5):.0f} / {p.q(0.99):.0f} / {max(p.latencies_ms):.0f} |")
    lines += ["", "CPU per upload in the burst (ms of CPU time per upload, by process; psutil user+system):", ""]
    kinds = list(next(iter(results.values()))[0].cpu_s)
    lines += ["| config | " + " | ".join(kinds) + " | all |", "|---|" + "---|" * (len(kinds) + 1)]
    for label, (b, _, _) in results.items():
        per = {k: b.cpu_s.get(k, 0.0) * 1000 / b.uploads for k in kinds}
        lines.append(f"| {label} | " + " | ".join(f"{per[k]:.1f}" for k in kinds) + f" | {sum(per.values()):.1f} |")
    lines += ["", "hash_media alone, in this process (decode + all signals of one 720p JPEG upload), CPU ms per upload:",
              "", "| thread pools | CPU ms / upload |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in hash_cpu.items()]
    for label, (b, _, _) in results.items():
        if label == "1 x 1":
            hasher_ms = b.cpu_s.get("hasher", 0.0) * 1000 / b.uploads
            matcher_ms = b.cpu_s.get("matcher", 0.0) * 1000 / b.uploads
            lines += ["", f"Capacity-model inputs ({label}, burst): hasher {hasher_ms:.1f} CPU-ms per 720p JPEG upload "
                      f"(fetch + decode + hash + produce), matcher {matcher_ms:.2f} CPU-ms per decision: one core "
                      f"hashes about {1000 / hasher_ms:.0f} uploads/s and matches about {1000 / matcher_ms:.0f} "
                      f"decisions/s at this bank size ({len(media.photos()) // 4} entries)."]
    b = next(iter(results.values()))[0]
    lines += ["", f"Mean upload size {b.bytes_mean / 1024:.0f} KiB (1280x720 JPEG of real photos, quality 65-95)."]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
