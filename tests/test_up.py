"""`vigil up` as a user runs it: prints where things listen, processes an event produced before
the workers joined their groups, and leaves no process behind on Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import topics
from tests.pipeline_helpers import write_photo
from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
from workers.settings import Settings

pytestmark = pytest.mark.integration


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def test_up_processes_early_events_and_stops_cleanly(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    photo = write_photo(media, "early", "coffee")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--media-root", str(media)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")})
    lines, kafka = [], None
    try:
        while kafka is None:  # workers are spawned but have not joined their groups yet
            line = proc.stdout.readline()
            assert line, "vigil up exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("kafka"):
                kafka = line.split()[1]
        settings = Settings(kafka=kafka, embedded=True)
        watcher = OutcomeWatcher(settings)
        producer = UploadProducer(settings)
        event = upload_event(photo)
        producer.submit(event)
        producer.flush()
        while True:
            line = proc.stdout.readline()
            assert line, "vigil up exited before ready:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("ready"):
                break
        out = "".join(lines)
        assert "redis" in out and "/metrics" in out
        api_url = next(x.split()[1] for x in lines if x.startswith("api "))  # the HTTP API, started too
        with urllib.request.urlopen(api_url + "/status", timeout=10) as resp:
            assert resp.read() == b"I-AM-ALIVE"
        found = watcher.wait_for({event["event_id"]}, timeout=60)
        watcher.close()
        assert found[event["event_id"]][0] == topics.DECISIONS
        assert found[event["event_id"]][1]["decision"] == "allow"
        family = _descendants(proc.pid)
        assert len(family) >= 5  # broker, redis-server, hasher, matcher, api
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    time.sleep(0.5)
    alive = [p for p in family if Path(f"/proc/{p}").exists() and
             Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == [], f"processes left behind: {alive}"
