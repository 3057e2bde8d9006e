"""`vigil demo`: the whole pipeline on the embedded stack, with real sample photos.

Banks some photos, submits edited copies of them (JPEG re-encode, half size, small crop) and
unrelated photos, prints every decision with its evidence and the latency read from the metrics."""
from __future__ import annotations

import tempfile
from dataclasses import replace
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workers.stack import samples, transforms
from workers.settings import Settings

BANKED = ("astronaut", "coffee", "chelsea", "rocket")
UNRELATED = ("china.jpg", "flower.jpg", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina")
EDITS = {
    "jpeg-q70": lambda im: transforms.encode(im, ".jpg", 70),
    "half-size": lambda im: transforms.encode(transforms.resize(im, 0.5), ".png"),
    # A small crop. PDQ's published recall on 5% crops is 9%; the signals work (issue 3) widens this.
    "crop-2pct": lambda im: transforms.encode(transforms.crop(im, 0.02), ".jpg", 92),
}


def run_demo(keep_going: bool = False, report_dir: Path | None = None) -> int:
    from workers.bank.importer import add_media_file
    from workers.bank.store import BankStore
    from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event
    from workers.stack.cluster import Cluster

    console = Console(width=max(140, Console().width))
    with tempfile.TemporaryDirectory(prefix="vigil-demo-media-") as media_dir:
        media = Path(media_dir)
        # The demo always runs on its own embedded stack, whatever VIGIL_KAFKA / VIGIL_REDIS say.
        settings = replace(Settings.from_env(), kafka=None, redis=None, media_roots=(str(media),), actor="vigil-demo")
        console.print("[bold]vigil demo[/]: starting the embedded broker, redis-server and workers ...")
        t0 = time.monotonic()
        with Cluster(settings, api=True) as cluster:
            s = cluster.settings
            console.print(f"  kafka {s.kafka}  redis {s.redis}")
            for w in cluster.workers:
                console.print(f"  {w.name} metrics {w.metrics_url}")

            store = BankStore.from_url(s.redis, actor="vigil-demo")
            store.create_bank("demo-known-bad", "block", label="demo")
            originals = {}
            for name in BANKED:
                path = media / f"bank-{name}.png"
                path.write_bytes(transforms.encode(samples.photo(name), ".png"))
                originals[name] = path
                add_media_file(store, "demo-known-bad", path, s)
            console.print(f"  bank 'demo-known-bad' (action block): {len(BANKED)} photos, version {store.version()}")

            uploads: list[tuple[Path, str]] = []  # (file, expected decision)
            for name in BANKED:
                img = samples.photo(name)
                for edit, fn in EDITS.items():
                    p = media / f"{name}-{edit}{'.png' if edit == 'half-size' else '.jpg'}"
                    p.write_bytes(fn(img))
                    uploads.append((p, "block"))
            for name in UNRELATED:
                p = media / f"{Path(name).stem}.jpg"
                p.write_bytes(transforms.encode(samples.photo(name), ".jpg", 90))
                uploads.append((p, "allow"))

            cluster.wait_ready(timeout=90)
            console.print(f"  ready after {time.monotonic() - t0:.1f}s; submitting {len(uploads)} uploads")
            watcher = OutcomeWatcher(s)
            producer = UploadProducer(s)
            events = {}
            for path, expected in uploads:
                e = upload_event(path, metadata={"file": path.name})
                events[e["event_id"]] = (path.name, expected)
                producer.submit(e)
            producer.flush()
            outcomes = watcher.wait_for(set(events), timeout=120)
            watcher.close()
            http_lookup(console, cluster.api_url, media / f"{BANKED[0]}-jpeg-q70.jpg")
            matcher = next(w for w in cluster.workers if w.kind == "matcher")
            metrics_text = urllib.request.urlopen(matcher.metrics_url, timeout=5).read().decode()
            if report_dir is not None:
                _transparency(console, s, report_dir)

    return _report(console, events, outcomes, metrics_text, keep_going)


def _transparency(console: Console, settings: Settings, out: Path) -> None:
    """The transparency report of what the demo just decided (today and tomorrow, UTC)."""
    from datetime import datetime, timedelta, timezone

    import redis

    from workers.reports import transparency

    today = datetime.now(timezone.utc).date()
    _, paths = transparency.build(settings, redis.Redis.from_url(settings.redis), today, today + timedelta(days=1), out)
    console.print(f"  transparency report of these decisions: {paths['html']}")
def http_lookup(console: Console, api_url: str, path: Path) -> None:
    """One lookup over HTTP, as a platform's upload form would make it (issue 15: `vigil api`)."""
    import httpx

    with open(path, "rb") as f:
        r = httpx.post(f"{api_url}/v1/lookup", files={"file": (path.name, f)}, timeout=30)
    console.print(f"[bold]HTTP lookup[/]: curl -s -F file=@{path.name} {api_url}/v1/lookup")
    d = r.json()
    top = d["matches"][0] if d.get("matches") else {}
    console.print(f"  -> {r.status_code} decision={d.get('decision')} bank={top.get('bank', '-')} "
                  f"entry={top.get('entry_id', '-')} {top.get('signal', '-')} distance={top.get('distance', '-')} "
                  f"bank_version={d.get('bank_version')} latency_ms={d.get('latency_ms', {}).get('total')}")


def _report(console: Console, events: dict, outcomes: dict, metrics_text: str, keep_going: bool) -> int:
    from workers.ops.promtext import histogram_quantile

    table = Table(title="decisions")
    for col in ("content id", "file", "decision", "bank", "entry", "signal", "distance", "latency ms", "ok"):
        table.add_column(col)
    wrong = 0
    for eid, (name, expected) in sorted(events.items(), key=lambda kv: kv[1][0]):
        topic, msg = outcomes.get(eid, (None, None))
        if msg is None:
            table.add_row("-", name, "[red]no decision[/]", "", "", "", "", "", "✗")
            wrong += 1
            continue
        if topic != "moderation.decisions":
            table.add_row(msg.get("content_id") or "-", name, f"[red]dead letter {msg['code']}[/]", "", "", "", "", "", "✗")
            wrong += 1
            continue
        m = msg["matches"][0] if msg["matches"] else {}
        ok = msg["decision"] == expected
        wrong += not ok
        colour = {"block": "red", "review": "yellow", "allow": "green"}[msg["decision"]]
        table.add_row(msg["content_id"], name, f"[{colour}]{msg['decision']}[/]", m.get("bank", "-"),
                      m.get("entry_id", "-"), m.get("signal", "-"), str(m.get("distance", "-")),
                      str(msg["latency_ms"]["total"]), "✓" if ok else "✗")
    console.print(table)
    p50 = histogram_quantile(metrics_text, "vigil_decision_latency_seconds", 0.50)
    p99 = histogram_quantile(metrics_text, "vigil_decision_latency_seconds", 0.99)
    console.print(f"decision latency from the matcher's metrics (submit -> decision): "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(outcomes)} decisions")
    if wrong:
        console.print(f"[red]{wrong} of {len(events)} uploads were not decided as expected[/]")
        return 1
    console.print(f"[green]all {len(events)} uploads decided as expected[/]; everything stopped")
    return 0
