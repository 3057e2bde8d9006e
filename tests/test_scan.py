"""vigil scan on real files: a directory, a tar shard, a zip and a Parquet manifest with banked
copies, distractors and hostile files; a SIGKILLed scan resumed from its state file; --submit to
the embedded stack. Against a real redis-server (the bank) or a hash-list file (no Redis)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_hostile import png_bomb
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.scan.run import ScanOptions, index_from_hash_list, index_from_redis, scan
from workers.settings import Settings
from workers.signals.hashing import hash_media
from workers.stack import samples, transforms

BANKED = ("astronaut", "coffee", "chelsea")
OTHERS = ("rocket", "camera", "coins", "moon", "horse", "stereo_motorcycle", "china.jpg")


def _jpeg(name: str, edit=None, quality: int = 90) -> bytes:
    rgb = samples.photo(name)
    return transforms.encode(edit(rgb) if edit else rgb, ".jpg", quality)


def _half(rgb):
    return transforms.resize(rgb, 0.5)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """Files of every kind the scan reads, with what each must come out as."""
    root = tmp_path_factory.mktemp("dataset")
    originals = root.parent / (root.name + "-originals")
    originals.mkdir()
    expect: dict[str, str] = {}
    for name in BANKED:
        (originals / f"{name}.jpg").write_bytes(_jpeg(name))
    tree = root / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "copy-astronaut.jpg").write_bytes(_jpeg("astronaut", _half, quality=50))
    expect[str(tree / "a" / "copy-astronaut.jpg")] = "block"
    for name in OTHERS[:3]:
        (tree / "a" / "b" / f"{name}.jpg").write_bytes(_jpeg(name))
        expect[str(tree / "a" / "b" / f"{name}.jpg")] = "allow"
    (tree / "bomb.png").write_bytes(png_bomb())
    expect[str(tree / "bomb.png")] = "image_too_large"
    cut = _jpeg("moon")
    (tree / "truncated.jpg").write_bytes(cut[: len(cut) // 2])
    expect[str(tree / "truncated.jpg")] = "truncated_media"
    os.mkfifo(tree / "fifo.jpg")
    expect[str(tree / "fifo.jpg")] = "not_a_file"
    (tree / "escape.jpg").symlink_to(originals / "coffee.jpg")  # outside the scanned roots
    expect[str(tree / "escape.jpg")] = "outside_media_roots"

    shard = root / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:  # WebDataset layout: key.ext members
        _member(tar, "000001.jpg", _jpeg("coffee", lambda x: transforms.crop(x, 0.02)))
        _member(tar, "000001.json", b'{"caption": "a cup"}')
        _member(tar, "000002.jpg", _jpeg("horse"))
    expect[f"{shard}::000001.jpg"] = "block"
    expect[f"{shard}::000001.json"] = "decode_failed"
    expect[f"{shard}::000002.jpg"] = "allow"

    gz = root / "shard-001.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        _member(tar, "x/chelsea.jpg", _jpeg("chelsea", quality=60))
    expect[f"{gz}::x/chelsea.jpg"] = "block"

    archive = root / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("stereo.jpg", _jpeg("stereo_motorcycle"))
        zf.writestr("dir/astro.jpg", _jpeg("astronaut", quality=70))
        zf.writestr("empty.jpg", b"")
    expect[f"{archive}::stereo.jpg"] = "allow"
    expect[f"{archive}::dir/astro.jpg"] = "block"
    expect[f"{archive}::empty.jpg"] = "empty_media"

    listed = root / "listed"
    listed.mkdir()
    (listed / "china.jpg").write_bytes(_jpeg("china.jpg"))
    (listed / "coffee-copy.jpg").write_bytes(_jpeg("coffee", _half))
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({"path": ["listed/china.jpg", "listed/coffee-copy.jpg", "listed/missing.jpg"],
                             "caption": ["a", "b", "c"]}), manifest)
    expect[str(listed / "china.jpg")] = "allow"
    expect[str(listed / "coffee-copy.jpg")] = "block"
    expect[str(listed / "missing.jpg")] = "media_not_found"
    return {"paths": [tree, shard, gz, archive, manifest], "originals": originals, "expect": expect}


def _outcomes(out: Path) -> dict[str, str]:
    state = [json.loads(line) for line in (out / "state.jsonl").read_text().splitlines()]
    return {r["key"]: r.get("code") or r["outcome"] for r in state}


def _bank(store: BankStore, originals: Path) -> None:
    store.create_bank("known", "block", label="csam")
    for name in BANKED:
        add_media_file(store, "known", originals / f"{name}.jpg", Settings())


def test_every_kind_of_source_gives_the_pipelines_outcome(dataset, store, tmp_path):
    _bank(store, dataset["originals"])
    settings = Settings(redis=store.r.connection_pool.connection_kwargs and _url(store))
    index = index_from_redis(settings, ["known"])
    out = tmp_path / "out"
    clean = tmp_path / "clean.txt"
    report = scan(ScanOptions(paths=dataset["paths"], out=out, processes=2, clean_manifest=clean,
                              state=None), settings, index)
    assert _outcomes(out) == dataset["expect"]
    blocked = {k for k, v in dataset["expect"].items() if v == "block"}
    matches = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    assert {m["key"] for m in matches} == blocked
    for m in matches:
        assert m["evidence"][0]["bank"] == "known" and m["evidence"][0]["distance"] <= 31
        assert {"md5", "sha256", "pdq", "phash"} <= set(m["signals"])
    assert set(clean.read_text().split()) == {k for k, v in dataset["expect"].items() if v == "allow"}
    assert report["by_outcome"]["block"] == len(blocked)
    assert report["by_code"] == {"decode_failed": 1, "empty_media": 1, "image_too_large": 1, "media_not_found": 1,
                                 "not_a_file": 1, "outside_media_roots": 1, "truncated_media": 1}
    assert report["files"] == len(dataset["expect"])


def _url(store: BankStore) -> str:
    kw = store.r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _pdq_lines(originals: Path) -> list[str]:
    """The banked photos' PDQ hashes as a local-format hash list (what NCMEC or TAT would send)."""
    lines = []
    for name in BANKED:
        r = hash_media((originals / f"{name}.jpg").read_bytes(), Settings(), query=False)
        lines += [f"pdq {s.value}" for s in r.signals if s.signal == "pdq" and not s.variant]
    return lines


def test_a_hash_list_scans_with_no_redis_and_finds_near_duplicates(dataset, tmp_path):
    lines = _pdq_lines(dataset["originals"])
    hash_list = tmp_path / "ncmec.txt"
    hash_list.write_text("\n".join(lines) + "\n")
    index = index_from_hash_list(Settings(), hash_list, "block")
    assert not Settings().redis
    report = scan(ScanOptions(paths=dataset["paths"], out=tmp_path / "out", processes=1, dedupe=True),
                  Settings(), index)
    assert _outcomes(tmp_path / "out") == dataset["expect"]
    assert report["matches_by_bank"] == {"ncmec": sum(v == "block" for v in dataset["expect"].values())}
    clusters = [json.loads(x) for x in (tmp_path / "out" / "duplicates.jsonl").read_text().splitlines()]
    astronauts = {k for k in dataset["expect"] if "astro" in k}
    assert any(set(c["keys"]) == astronauts for c in clusters), clusters


def test_a_killed_scan_resumes_from_its_state_and_ends_with_the_same_result(dataset, tmp_path):
    lines = _pdq_lines(dataset["originals"])
    hash_list = tmp_path / "list.txt"
    hash_list.write_text("\n".join(lines) + "\n")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):  # enough files that the kill lands mid-scan
        name = (BANKED + OTHERS)[i % 10]
        (many / f"{i:03d}.jpg").write_bytes(_jpeg(name, _half, quality=60 + i % 30))
    argv = [sys.executable, "-m", "workers.cli", "scan", str(many), *map(str, dataset["paths"]),
            "--hash-list", str(hash_list), "--processes", "1", "--json"]
    state = tmp_path / "state.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    killed = subprocess.Popen(argv + ["--out", str(tmp_path / "a"), "--state", str(state)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not state.exists() or len(state.read_text().splitlines()) < 10):
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before = len(state.read_text().splitlines())
    assert 10 <= done_before < 40 + len(dataset["expect"]), "the kill must land mid-scan"
    resumed = subprocess.run(argv + ["--out", str(tmp_path / "a"), "--state", str(state)], env=env,
                             capture_output=True, text=True, timeout=300)
    fresh = subprocess.run(argv + ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                           timeout=300)
    assert resumed.returncode == fresh.returncode == 1, resumed.stderr + fresh.stderr  # 1: something matched
    r, f = json.loads(resumed.stdout), json.loads(fresh.stdout)
    assert r["resumed_from_state"] == done_before and r["scanned_this_run"] + done_before >= f["files"]
    for k in ("files", "by_outcome", "by_code", "matches_by_bank"):
        assert r[k] == f[k], k
    a = {json.loads(x)["key"] for x in (tmp_path / "a" / "matches.jsonl").read_text().splitlines()}
    b = {json.loads(x)["key"] for x in (tmp_path / "b" / "matches.jsonl").read_text().splitlines()}
    assert a == b and len(a) == f["by_outcome"]["block"]


@pytest.mark.integration
def test_submit_puts_every_file_on_the_pipeline_and_status_follows_it_to_the_end(cluster, media_dir, tmp_path):
    from workers.cli import main as vigil

    store = BankStore.from_url(cluster.settings.redis, actor="pytest")
    store.create_bank("scan-known", "block", exist_ok=True)
    original = tmp_path / "original.jpg"
    original.write_bytes(_jpeg("rocket"))
    add_media_file(store, "scan-known", original, Settings())
    backlog = media_dir / "backlog"
    (backlog / "day1").mkdir(parents=True)
    (backlog / "day1" / "rocket-copy.jpg").write_bytes(_jpeg("rocket", _half, quality=50))
    for name in ("moon", "horse", "camera"):
        (backlog / "day1" / f"{name}.jpg").write_bytes(_jpeg(name))
    (backlog / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with tarfile.open(backlog / "members.tar", "w") as tar:
        _member(tar, "a.jpg", _jpeg("coins"))  # archive members have no URI a hasher can read
    flags = ["--kafka", cluster.settings.kafka, "--out", str(tmp_path / "out")]
    assert vigil(["scan", str(backlog), "--submit", "--scan-id", "t1", *flags]) == 0
    sub = json.loads((tmp_path / "out" / "submit-t1.json").read_text())
    assert sub["files"] == 5 and [x["key"] for x in sub["not_submitted"]] == [f"{backlog / 'members.tar'}::a.jpg"]
    out = tmp_path / "status.json"
    with open(out, "w") as fh:
        code = subprocess.run([sys.executable, "-m", "workers.cli", "scan", "status", "t1", *flags, "--json",
                               "--timeout", "120"], stdout=fh, timeout=180,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}).returncode
    status = json.loads(out.read_text())
    assert code == 0 and status["complete"] and status["decided"] == 5
    assert status["by_outcome"] == {"allow": 3, "block": 1, "dead:decode_failed": 1}
    assert [m["key"] for m in status["matches"]] == [str(backlog / "day1" / "rocket-copy.jpg")]
