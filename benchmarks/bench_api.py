"""The HTTP API under a real load generator (wrk), on the embedded Redis, side by side with
HMA's approach (a Flask route over python-threatexchange's PDQ index under gunicorn, the same bank).

- raw_lookup of PDQ hashes against a 1M-entry bank: requests/s and latency percentiles, vigil
  (uvicorn, one process) and HMA-style (gunicorn gthread, one process), same queries (half near
  copies of banked hashes, half random), same answers (checked first).
- POST /v1/lookup of a 720p JPEG (decode, hash, dihedral variants, search, decide) at 20 clients.
- the API process's RSS with the bank loaded.

wrk (Debian package `wrk`) drives the load with keep-alive connections. Everything shares the
machine's cores (wrk too), so the ratio between the two servers is the figure to read.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WRK_GET = r'''
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
local token = os.getenv("WRK_TOKEN")
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {["Authorization"] = "Bearer " .. token})
end
'''
WRK_POST = r'''
local f = io.open(os.getenv("WRK_FILE"), "rb"); local data = f:read("*a"); f:close()
local b = "vigilbenchboundary"
wrk.method = "POST"
wrk.body = "--" .. b .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n" ..
           "Content-Type: image/jpeg\r\n\r\n" .. data .. "\r\n--" .. b .. "--\r\n"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN")
'''


def fill(store, bank: str, n: int, rng: np.random.Generator, batch: int = 50_000) -> np.ndarray:
    """n one-PDQ entries in BankStore's layout (ids h-<16 hex>, as imports make them), written with
    pipelined HSETs: the JSON as Entry.to_json writes it and the packed records
    (workers/bank/codes.py), built in bulk; the first entry is checked against the real writers."""
    from workers.bank.codes import NO_FRAME, NO_QUALITY, pack_codes
    from workers.bank.model import Entry
    from workers.bank.store import codes_key, entries_key
    from workers.signals import SignalValue

    store.create_bank(bank, "block", exist_ok=True)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    tail = int(NO_FRAME).to_bytes(8, "big", signed=True) + bytes([NO_QUALITY, 0]) + bytes(4)
    ekey, ckey = entries_key(bank), codes_key(bank, "pdq")
    for s in range(0, n, batch):
        block = codes[s:s + batch]
        ids = [f"h-{s + i:016x}" for i in range(len(block))]
        hexes = [block[i].tobytes().hex() for i in range(len(block))]
        pipe = store._raw.pipeline(transaction=False)
        pipe.hset(ekey, mapping={e: f'{{"entry_id":"{e}","bank":"{bank}","source":"bench","added_at_ms":0,'
                                    f'"disabled":false,"signals":[{{"signal":"pdq","value":"{h}"}}]}}'
                                 for e, h in zip(ids, hexes)})
        pipe.hset(ckey, mapping={e: block[i].tobytes() + tail for i, e in enumerate(ids)})
        pipe.execute()
    first = Entry("h-0000000000000000", bank, (SignalValue("pdq", codes[0].tobytes().hex()),), source="bench")
    assert store._raw.hget(ckey, first.entry_id) == pack_codes(first, "pdq")
    assert json.loads(store.r.hget(ekey, first.entry_id)) == first.to_json()
    return codes


def queries(codes: np.ndarray, rng: np.random.Generator, n: int) -> list[str]:
    """Half near copies (up to 12 of 256 bits flipped) of banked hashes, half random hashes."""
    out = []
    for k in range(n):
        if k % 2 == 0:
            q = np.unpackbits(codes[rng.integers(len(codes))]).copy()
            q[rng.choice(256, rng.integers(0, 13), replace=False)] ^= 1
            out.append(np.packbits(q).tobytes().hex())
        else:
            out.append(rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex())
    return out


def wrk(url: str, script: str, env: dict[str, str], seconds: int, connections: int, threads: int = 2) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                              "-s", f.name, url], env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=seconds + 60).stdout
    finally:
        os.unlink(f.name)
    pct = {}
    for p, v, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        pct[int(p)] = float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": pct.get(50), "p90": pct.get(90), "p99": pct.get(99),
            "non2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(0) if errors else "", "raw": out}


def _wait(url: str, proc: subprocess.Popen, timeout: float = 600) -> float:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/status", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def tree_rss(pid: int) -> int:
    import psutil

    p = psutil.Process(pid)
    return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)])


def jpeg_720p() -> bytes:
    import cv2

    from workers.stack import samples, transforms

    img = cv2.resize(samples.photo("astronaut"), (1280, 720), interpolation=cv2.INTER_AREA)
    return transforms.encode(img, ".jpg", 90)


def run(quick: bool = False) -> str:
    import httpx
    import psutil

    from workers.api.hma_names import content_id
    from workers.api.tokens import TokenStore
    from workers.bank.store import BankStore
    from workers.stack.embedded import EmbeddedRedis, free_port

    if shutil.which("wrk") is None:
        return "## HTTP API\n\nnot run: `wrk` is not installed (`apt-get install wrk`)\n"
    n = 200_000 if quick else 1_000_000
    seconds = 5 if quick else 10
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-api-"))
    redis = EmbeddedRedis(tmp / "redis").start()
    procs: list[subprocess.Popen] = []
    try:
        store = BankStore.from_url(redis.url, actor="bench")
        rng = np.random.default_rng(15)
        t0 = time.perf_counter()
        codes = fill(store, "bench", n, rng)
        fill_s = time.perf_counter() - t0
        token, _ = TokenStore(store.r).create("bench", ["lookup"], rate_per_s=1e9, burst=10**9)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        vport, hport = free_port(), free_port()
        vigil = subprocess.Popen([sys.executable, "-m", "workers.cli", "api", "--port", str(vport)],
                                 env={**env, "VIGIL_REDIS": redis.url, "VIGIL_LOG_LEVEL": "WARNING"},
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "api.log", "wb"))
        procs.append(vigil)
        vurl = f"http://127.0.0.1:{vport}"
        vigil_load_s = _wait(vurl, vigil)
        np.save(tmp / "codes.npy", codes)
        np.save(tmp / "ids.npy", np.array([content_id(f"h-{i:016x}") for i in range(n)], dtype=np.uint64))
        hma = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "8",
                                "-b", f"127.0.0.1:{hport}", "benchmarks.hma_flask_app:create()"],
                               env={**env, "HMA_BENCH_CODES": str(tmp / "codes.npy"),
                                    "HMA_BENCH_IDS": str(tmp / "ids.npy")},
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "hma.log", "wb"))
        procs.append(hma)
        hurl = f"http://127.0.0.1:{hport}"
        hma_load_s = _wait(hurl, hma)
        qs = queries(codes, rng, 2000)
        # the same answers from both, before timing anything
        agree, hits = 0, 0
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as c:
            for q in qs[:200]:
                p = {"signal": q, "signal_type": "pdq"}
                a = set(c.get(vurl + "/m/raw_lookup", params=p).json()["matches"])
                b = set(c.get(hurl + "/m/raw_lookup", params=p).json()["matches"])
                agree += a == b
                hits += bool(a)
        paths = tmp / "paths.txt"
        paths.write_text("".join(f"/m/raw_lookup?signal_type=pdq&signal={q}\n" for q in qs))
        wenv = {"WRK_PATHS": str(paths), "WRK_TOKEN": token}
        rss_loaded = psutil.Process(vigil.pid).memory_info().rss
        rows = []
        for conns in (16, 64):
            for name, url in (("vigil (FastAPI/uvicorn, MIH index)", vurl), ("HMA-style (Flask/gunicorn, pytx PDQIndex)", hurl)):
                r = wrk(url, WRK_GET, wenv, seconds, conns)
                rows.append((name, conns, r))
        jpg = jpeg_720p()
        (tmp / "720p.jpg").write_bytes(jpg)
        post = wrk(vurl + "/v1/lookup", WRK_POST, {"WRK_FILE": str(tmp / "720p.jpg"), "WRK_TOKEN": token},
                   seconds, 20)
        rss_after = psutil.Process(vigil.pid).memory_info().rss
        hma_rss = tree_rss(hma.pid)
        hma.terminate()
        vigil.terminate()
        vigil.wait(30)
        # the same API with two worker processes (each its own index): both cores
        vigil2 = subprocess.Popen([sys.executable, "-m", "workers.cli", "api", "--port", str(vport), "--workers", "2"],
                                  env={**env, "VIGIL_REDIS": redis.url, "VIGIL_LOG_LEVEL": "WARNING"},
                                  stdout=subprocess.DEVNULL, stderr=open(tmp / "api2.log", "wb"))
        procs.append(vigil2)
        _wait(vurl, vigil2)
        time.sleep(5)  # both workers loaded (each answers /status once its own index is in)
        two = wrk(vurl, WRK_GET, wenv, seconds, 64)
        rows.append(("vigil, --workers 2", 64, two))
        rss_two = tree_rss(vigil2.pid)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(v):
        return "-" if v is None else f"{v:.2f}"

    lines = ["## HTTP API (`vigil api`)", "",
             f"Bank: {n:,} random PDQ entries in the embedded Redis (written in {fill_s:.0f} s); vigil's API "
             f"loaded them in {vigil_load_s:.1f} s, the HMA-style server built its index in {hma_load_s:.1f} s. "
             f"Queries: 2,000 PDQ hashes, half near copies of banked ones (0-12 bits flipped), half random; "
             f"both servers gave the same matches for {agree} of 200 checked ({hits} with a match). "
             f"Load: wrk, 2 threads, {seconds} s per row, keep-alive; wrk runs on the same 2 cores.", "",
             "| server | route | connections | requests/s | p50 ms | p90 ms | p99 ms | non-2xx |", "|---|---|---|---|---|---|---|---|"]
    for name, conns, r in rows:
        lines.append(f"| {name} | GET /m/raw_lookup | {conns} | {r['rps']:,.0f} | {ms(r['p50'])} | {ms(r['p90'])} | "
                     f"{ms(r['p99'])} | {r['non2xx']} |")
    lines.append(f"| vigil | POST /v1/lookup (720p JPEG, {len(jpg) // 1024} KB, multipart) | 20 | {post['rps']:,.1f} | "
                 f"{ms(post['p50'])} | {ms(post['p90'])} | {ms(post['p99'])} | {post['non2xx']} |")
    ratio = [r["rps"] for _, c, r in rows[:4] if c == 64]
    lines += ["", f"raw_lookup ratio vigil / HMA-style at 64 connections: {ratio[0] / max(ratio[1], 1e-9):.1f}x. "
              f"Goals (issue 15): raw_lookup >= 3,000 requests/s with p99 < 10 ms; /v1/lookup p99 < 50 ms at 20 clients.",
              "", f"RSS of the API process: {rss_loaded / 2**20:.0f} MiB with the {n:,}-entry bank loaded, "
              f"{rss_after / 2**20:.0f} MiB after the runs; with --workers 2, {rss_two / 2**20:.0f} MiB for both "
              f"(HMA-style server, master and worker: {hma_rss / 2**20:.0f} MiB).",
              "", "Reproduce: `python -m benchmarks --only api` (`--quick`: 200k entries, 5 s runs)."]
    errs = [r["socket_errors"] for _, _, r in rows if r["socket_errors"]] + ([post["socket_errors"]] if post["socket_errors"] else [])
    if errs:
        lines += ["", "wrk socket errors: " + "; ".join(errs)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
