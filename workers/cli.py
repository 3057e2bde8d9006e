"""vigil <noun> <verb>: the command line. `vigil --help` and `vigil <noun> --help` teach the rest.

Exit codes: 0 success; 1 failure while running; 2 bad usage or input; 3 a service (Kafka, Redis)
is unreachable; 4 timed out waiting for decisions.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _service_flags(p: argparse.ArgumentParser, media: bool = False) -> None:
    p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers (env VIGIL_KAFKA)")
    p.add_argument("--redis", metavar="URL", help="Redis URL, e.g. redis://host:6379/0 (env VIGIL_REDIS)")
    if media:
        p.add_argument("--media-root", action="append", metavar="DIR", dest="media_roots",
                       help="directory file:// media may be read from; repeatable (env VIGIL_MEDIA_ROOTS)")


def _settings(args: argparse.Namespace):
    from workers.settings import Settings
    try:
        s = Settings.from_env()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    over: dict[str, Any] = {"kafka": getattr(args, "kafka", None), "redis": getattr(args, "redis", None)}
    if getattr(args, "media_roots", None):
        over["media_roots"] = tuple(str(Path(d).resolve()) for d in args.media_roots)
    for name in ("metrics_port", "partitions", "hasher_threads"):
        over[name] = getattr(args, name, None)
    if not s.actor:
        over["actor"] = getattr(args, "actor", None) or _whoami()
    return s.with_overrides(**over)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _need(settings, *names: str) -> None:
    for name in names:
        if not getattr(settings, name):
            flag = {"kafka": "--kafka / VIGIL_KAFKA", "redis": "--redis / VIGIL_REDIS"}[name]
            raise CliError(f"no {name} configured: pass {flag} (or run the embedded stack with `vigil up`)")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# -- vigil up / worker / topics ----------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from workers.stack.cluster import Cluster

    settings = _settings(args)
    if not settings.media_roots:
        settings = settings.with_overrides(media_roots=(str(Path.cwd()),))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Cluster(settings, hashers=args.hashers, matchers=args.matchers) as cluster:
        s = cluster.settings
        print(f"kafka   {s.kafka}" + ("  (embedded tansu)" if cluster.services.broker else ""))
        print(f"redis   {s.redis}" + ("  (embedded redis-server)" if cluster.services.redis_server else ""))
        print(f"media   {', '.join(s.media_roots)}")
        for w in cluster.workers:
            print(f"{w.name:<10} metrics {w.metrics_url}  log {w.log_path}")
        cluster.wait_ready(timeout=args.ready_timeout)
        print(f"ready: export VIGIL_KAFKA={s.kafka} VIGIL_REDIS={s.redis}  (Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5):
            for w in cluster.workers:
                if w.proc.poll() is not None:
                    print(f"{w.name} exited with code {w.proc.returncode}; stopping", file=sys.stderr)
                    return EXIT_FAILURE
    print("stopped")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.ops import logs

    settings = _settings(args)
    logs.setup(settings.log_level)
    _need(settings, "kafka")
    if args.kind == "hasher":
        from workers.uploads.hasher import Hasher

        hasher = Hasher(settings)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: hasher.stop())
        hasher.run()
    else:
        _need(settings, "redis")
        from workers.uploads.matcher import Matcher

        matcher = Matcher(settings)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: matcher.stop())
        matcher.run()
    return EXIT_OK


def cmd_topics_create(args: argparse.Namespace) -> int:
    from workers.stream.kafka import create_topics

    settings = _settings(args)
    _need(settings, "kafka")
    try:
        created = create_topics(settings)
    except RuntimeError as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    print(json.dumps({"created": created}) if args.json else f"created: {', '.join(created) or 'nothing (all exist)'}")
    return EXIT_OK


# -- vigil bank ... ----------------------------------------------------------------------------
def _store(args: argparse.Namespace):
    from workers.bank.store import BankStore

    settings = _settings(args)
    _need(settings, "redis")
    store = BankStore.from_url(settings.redis, actor=settings.actor, socket_connect_timeout=5)
    try:
        store.r.ping()
    except Exception as exc:
        raise CliError(f"cannot reach Redis at {settings.redis}: {exc}", EXIT_UNAVAILABLE) from None
    return store, settings


def _signal_ints(items: list[str] | None, flag: str) -> dict[str, int]:
    from workers.signals import ALL_SIGNALS

    out = {}
    for item in items or ():
        signal_name, _, value = item.partition("=")
        if signal_name not in ALL_SIGNALS or not value.isdigit():
            raise CliError(f"{flag} takes SIGNAL=N with SIGNAL one of {', '.join(ALL_SIGNALS)}, e.g. pdq=31; "
                           f"not {item!r}")
        out[signal_name] = int(value)
    return out


def cmd_bank_create(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    bank = store.create_bank(args.name, args.action, label=args.label, exist_ok=args.exist_ok,
                             thresholds=_signal_ints(args.threshold, "--threshold"), dihedral=args.dihedral,
                             live_strict=_signal_ints(args.live_strict, "--live-strict"),
                             live_frames=args.live_frames, live_window_s=args.live_window)
    _print_json(bank.to_json()) if args.json else print(f"bank {bank.name}: action {bank.action}")
    return EXIT_OK


def cmd_bank_add(args: argparse.Namespace) -> int:
    from workers.bank.importer import add_media_file
    from workers.errors import MediaError

    store, settings = _store(args)
    store.require_bank(args.name)
    added, failed = [], 0
    for path in _progress(args.files, "hashing", args.json):
        try:
            entry, version = add_media_file(store, args.name, Path(path), settings, label=args.label, note=args.note)
        except (OSError, MediaError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        added.append({"entry_id": entry.entry_id, "file": str(path), "version": version,
                      "signals": {s.signal: s.value for s in entry.signals if not s.variant}})
    if args.json:
        _print_json({"added": added, "failed": failed})
    else:
        for a in added:
            print(f"{a['entry_id']}  {a['file']}  " + "  ".join(f"{k}={v[:16]}" for k, v in a["signals"].items()))
        print(f"added {len(added)} entries to {args.name}" + (f"; {failed} files failed" if failed else ""))
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_bank_import(args: argparse.Namespace) -> int:
    from workers.bank.importer import import_file

    store, _ = _store(args)
    from workers.bank.formats import FormatError

    try:
        report = import_file(store, args.name, Path(args.file), fmt=args.format, skip_invalid=args.skip_invalid,
                             label=args.label, progress=not args.json)
    except FormatError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    if report["loaded"] and not args.no_snapshot:
        if store.has_codes(args.name):
            report["snapshot"] = _write_snapshot(store, args.name, quiet=args.json)
        else:
            report["snapshot"] = None
            report["snapshot_skipped"] = f"no packed codes: run `vigil bank backfill {args.name}`"
    if args.json:
        _print_json(report)
    else:
        for line in report.get("invalid", [])[:50]:
            print(f"invalid line {line['line']}: {line['reason']}", file=sys.stderr)
        print(f"{'imported' if report['loaded'] else 'NOT imported'}: {report['added']} new, "
              f"{report['unchanged']} already present, {report['invalid_count']} invalid lines"
              + (f", {report['unsupported_count']} unsupported hashes kept out" if report.get("unsupported_count") else ""))
        if report.get("snapshot"):
            print(f"snapshot of {args.name} written for matcher cold starts: "
                  + _snapshot_summary(report["snapshot"]))
        elif report.get("snapshot_skipped"):
            print(f"no snapshot written ({report['snapshot_skipped']})")
    return EXIT_OK if report["loaded"] else EXIT_USAGE


def _write_snapshot(store, name: str, quiet: bool) -> dict[str, dict[str, Any]]:
    """BankStore.write_snapshot with a progress bar on a terminal."""
    if quiet or not sys.stderr.isatty():
        return store.write_snapshot(name)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(signal_name: str, done: int, total: int) -> None:
            if signal_name not in tasks:
                tasks[signal_name] = bar.add_task(f"snapshot {name} {signal_name}", total=total)
            bar.update(tasks[signal_name], completed=done)

        return store.write_snapshot(name, progress=progress)


def _snapshot_summary(per_signal: dict[str, dict[str, Any]]) -> str:
    written = {s: r for s, r in per_signal.items() if r["entries"]}
    return ", ".join(f"{s} {r['entries']:,} entries / {r['rows']:,} rows / {r['bytes'] / 2**20:.1f} MiB "
                     f"in {r['seconds']:.1f} s" for s, r in written.items()) or "no entries"


def cmd_bank_snapshot(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    if bool(args.names) == bool(args.all):
        raise CliError("name the banks to snapshot, or pass --all (not both)")
    names = sorted(store.banks()) if args.all else args.names
    written, skipped = {}, {}
    for name in names:
        if args.all and not store.has_codes(name):
            skipped[name] = f"no packed codes: run `vigil bank backfill {name}`"
            continue
        written[name] = _write_snapshot(store, name, quiet=args.json)  # BankError for unknown / no codes
        if not args.json:
            for signal_name, r in written[name].items():
                if r["entries"]:
                    print(f"{name:<20} {signal_name:<7} {r['entries']:>10,} entries {r['rows']:>10,} rows "
                          f"{r['bytes'] / 2**20:>9.1f} MiB {r['seconds']:>7.1f} s  (version {r['version']})")
            if not any(r["entries"] for r in written[name].values()):
                print(f"{name:<20} empty: no snapshot needed")
    if args.json:
        _print_json({"version": store.version(), "banks": written, "skipped": skipped})
    else:
        for name, why in skipped.items():
            print(f"{name:<20} skipped ({why})", file=sys.stderr)
    return EXIT_OK


def cmd_bank_backfill(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    store.require_bank(args.name)
    if not args.json:
        print(f"backfilling the packed codes of {args.name} from its JSON entries "
              "(the bank's writers should be stopped meanwhile)", file=sys.stderr)
    t0 = time.perf_counter()
    n = store.backfill_codes(args.name)
    out = {"bank": args.name, "entries": n, "seconds": round(time.perf_counter() - t0, 3)}
    _print_json(out) if args.json else print(
        f"wrote the packed codes of {n:,} entries of {args.name} in {out['seconds']:.1f} s; "
        f"now `vigil bank snapshot {args.name}`")
    return EXIT_OK


def _bank_rows(store, count_disabled: bool = False) -> list[dict[str, Any]]:
    """Per bank, from counters Redis keeps (HLEN), not by reading every entry: entries, enabled
    entries per signal (the packed codes hashes), and how far its snapshot lags the change stream.
    `disabled` needs a scan of every entry's JSON, so it is counted only when asked."""
    from workers.bank.store import codes_key, entries_key
    from workers.signals import ALL_SIGNALS

    version, now_ms = store.version(), time.time() * 1000
    rows = []
    for name, bank in sorted(store.banks().items()):
        codes = store.has_codes(name)
        per_signal = {s: n for s in ALL_SIGNALS if (n := int(store.r.hlen(codes_key(name, s))))} if codes else None
        snaps = {s: {"version": m.version, "behind": max(version - m.version, 0),
                     "age_s": round((now_ms - m.at_ms) / 1000, 1), "entries": m.entries, "rows": m.rows,
                     "bytes": m.bytes} for s, m in store.snapshot_metas(name).items()}
        disabled = None
        if count_disabled:
            disabled = sum(e.disabled for e in store.iter_entries(name))
        rows.append({"bank": name, "action": bank.action, "enabled": bank.enabled, "label": bank.label,
                     "entries": store.entry_count(name), "disabled": disabled, "packed_codes": codes,
                     "per_signal": per_signal, "snapshot": snaps,
                     "snapshot_behind": max((x["behind"] for x in snaps.values()), default=None),
                     "redis_bytes": store.r.memory_usage(entries_key(name)) or 0,
                     "thresholds": bank.thresholds, "dihedral": bank.dihedral})
    return rows


def _signals_text(r: dict[str, Any], none: str) -> str:
    """A bank row's enabled entries per signal, for list and stats."""
    if r["per_signal"] is None:
        return "per-signal counts need `vigil bank backfill`"
    return ", ".join(f"{k} {v}" for k, v in sorted(r["per_signal"].items())) or none


def _snapshot_text(r: dict[str, Any]) -> str:
    if not r["snapshot"]:
        return "no snapshot" + ("" if r["packed_codes"] else " (needs `vigil bank backfill`)")
    oldest = min(r["snapshot"].values(), key=lambda x: x["version"])
    return f"snapshot v{oldest['version']}, {_age(oldest['age_s'])} old, {r['snapshot_behind']} changes behind"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_bank_list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    rows = _bank_rows(store)
    if args.json:
        _print_json({"version": store.version(), "banks": rows})
    else:
        print(f"bank version {store.version()}")
        for r in rows:
            sig = _signals_text(r, "no signals")
            print(f"{r['bank']:<20} {r['action']:<7} {'enabled' if r['enabled'] else 'DISABLED':<9}"
                  f" {r['entries']:>8} entries ({sig}); {_snapshot_text(r)}")
    return EXIT_OK


def cmd_bank_remove(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    version = store.remove_entries(args.name, args.entry_ids)
    print(json.dumps({"removed": args.entry_ids, "version": version}) if args.json
          else f"removed {len(args.entry_ids)} entries from {args.name} (bank version {version})")
    return EXIT_OK


def cmd_bank_stats(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    last = store.audit(count=1)
    rows = _bank_rows(store, count_disabled=args.count_disabled)
    info = store.r.info("memory")
    out = {"version": store.version(), "last_change": last[0] if last else None, "banks": rows,
           "redis_used_memory_bytes": info.get("used_memory")}
    if args.json:
        _print_json(out)
        return EXIT_OK
    lc = out["last_change"]
    print(f"bank version {out['version']}; redis uses {out['redis_used_memory_bytes'] / 2**20:.1f} MiB"
          + (f"; last change {lc['op']} on {lc['bank']} by {lc['actor']} at {lc['at_ms']}" if lc else ""))
    for r in rows:
        sig = _signals_text(r, "no hashes")
        disabled = "" if r["disabled"] is None else f" ({r['disabled']} disabled)"
        print(f"{r['bank']:<20} {r['action']:<7} {'enabled' if r['enabled'] else 'DISABLED':<9} "
              f"{r['entries']:>9} entries{disabled}  {r['redis_bytes'] / 2**20:8.2f} MiB  enabled: {sig}; "
              f"{_snapshot_text(r)}")
    return EXIT_OK


def cmd_bank_export(args: argparse.Namespace) -> int:
    from workers.bank import formats
    from workers.bank.importer import export_records

    store, _ = _store(args)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = formats.WRITERS[args.format]
        count = writer(export_records(store, args.name), out)
    finally:
        if args.output:
            out.close()
    print(f"exported {count} hashes from {args.name}", file=sys.stderr)
    return EXIT_OK


def cmd_bank_entry_state(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    disable = args.verb == "disable"
    versions = [store.set_entry_disabled(args.name, e, disable) for e in args.entry_ids]
    print(json.dumps({"entries": args.entry_ids, "disabled": disable, "version": versions[-1]}) if args.json
          else f"{'disabled' if disable else 'enabled'} {len(args.entry_ids)} entries in {args.name} "
               f"(bank version {versions[-1]})")
    return EXIT_OK


def cmd_bank_update(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    changes: dict[str, Any] = {}
    if args.action:
        changes["action"] = args.action
    if args.enable or args.disable:
        changes["enabled"] = bool(args.enable)
    if args.label is not None:
        changes["label"] = args.label
    if args.threshold:
        changes["thresholds"] = {**store.require_bank(args.name).thresholds, **_signal_ints(args.threshold, "--threshold")}
    if args.dihedral is not None:
        changes["dihedral"] = args.dihedral == "on"
    if not changes:
        raise CliError("nothing to change: pass --action, --enable/--disable, --label, --threshold or --dihedral")
    bank = store.update_bank(args.name, **changes)
    _print_json(bank.to_json()) if args.json else print(f"bank {bank.name} updated: {', '.join(changes)}")
    return EXIT_OK


# -- vigil submit / demo -----------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    from workers.stream.client import OutcomeWatcher, UploadProducer, upload_event

    settings = _settings(args)
    _need(settings, "kafka")
    paths = [Path(f) for f in args.files]
    for p in paths:
        if not p.is_file():
            raise CliError(f"no such file: {p}")
    watcher = OutcomeWatcher(settings) if args.wait else None
    producer = UploadProducer(settings)
    events = [upload_event(p, metadata={"path": str(p)} if args.with_path else None) for p in paths]
    for e in events:
        producer.submit(e)
        if not args.json and not args.wait:
            print(f"submitted {e['event_id']}  {e['content_id']}  {e['media_uri']}")
    producer.flush()
    if watcher is None:
        if args.json:
            _print_json(events)
        return EXIT_OK
    names = {e["event_id"]: Path(e["media_uri"]).name for e in events}
    pending = set(names)
    deadline = time.monotonic() + args.timeout
    for topic, msg in watcher.messages(args.timeout):
        eid = msg.get("event_id")
        if eid not in pending:
            continue
        pending.discard(eid)
        if args.json:
            print(json.dumps({"topic": topic, **msg}))
        elif topic == "moderation.decisions":
            top = msg["matches"][0] if msg["matches"] else None
            ev = f"{top['bank']}/{top['entry_id']} {top['signal']} d={top['distance']}" if top else "-"
            print(f"{msg['decision']:<6} {names[eid]:<30} {ev}  {msg['latency_ms']['total']} ms")
        else:
            print(f"DEAD   {names[eid]:<30} {msg['code']}: {msg['message']}")
        if not pending or time.monotonic() > deadline:
            break
    watcher.close()
    if pending:
        print(f"timed out: {len(pending)} of {len(events)} not decided within {args.timeout:.0f}s", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_OK


def cmd_live_push(args: argparse.Namespace) -> int:
    """Sample a video (or walk a directory of images) and push frames in real time."""
    from workers.live.streams import LiveFrameProducer
    from workers.live.source import frames_from

    settings = _settings(args)
    _need(settings, "kafka")
    source = Path(args.source)
    if not source.exists():
        raise CliError(f"no such file or directory: {source}")
    producer = LiveFrameProducer(settings)
    period = 1.0 / args.fps
    seq, next_at = 0, time.monotonic()
    try:
        for jpeg in frames_from(source, args.fps, loop=args.loop):
            delay = next_at - time.monotonic()
            if delay > 0 and not args.fast:
                time.sleep(delay)
            next_at += period
            producer.send_frame(args.stream_id, seq, jpeg)
            if not args.json:
                print(f"\rpushed frame {seq} of stream {args.stream_id}", end="", file=sys.stderr, flush=True)
            seq += 1
            if args.max_frames and seq >= args.max_frames:
                break
    except KeyboardInterrupt:
        pass
    producer.end_stream(args.stream_id, seq)
    producer.flush()
    print(json.dumps({"stream_id": args.stream_id, "frames": seq}) if args.json
          else f"\npushed {seq} frames and end_of_stream for {args.stream_id}")
    return EXIT_OK


def cmd_live_watch(args: argparse.Namespace) -> int:
    from workers.stream.client import OutcomeWatcher

    settings = _settings(args)
    _need(settings, "kafka")
    watcher = OutcomeWatcher(settings, watch=("moderation.decisions",), from_beginning=args.from_beginning)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for _topic, msg in watcher.messages(0.5):
                if msg.get("source") != "live" or (args.stream_id and msg.get("stream_id") != args.stream_id):
                    continue
                if args.json:
                    print(json.dumps(msg), flush=True)
                    continue
                if "summary" in msg:
                    sm = msg["summary"]
                    print(f"END    {msg['stream_id']}: {sm['final_status']}, {sm['frames']} frames, "
                          f"{sm['matched_frames']} matched, {sm['skipped_frames']} skipped", flush=True)
                else:
                    top = msg["matches"][0] if msg["matches"] else {}
                    print(f"{msg['decision'].upper():<6} {msg['stream_id']} seq {top.get('seq')} "
                          f"{top.get('bank')}/{top.get('entry_id')} {top.get('signal')} d={top.get('distance')} "
                          f"{msg['latency_ms']['total']} ms", flush=True)
    except KeyboardInterrupt:
        pass
    watcher.close()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.stack.demo import run_demo

    return run_demo(keep_going=args.keep)


# -- plumbing ----------------------------------------------------------------------------------
def _progress(items: list, what: str, quiet: bool):
    if quiet or len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=what, console=None, transient=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vigil",
        description="Moderation workers: match uploads against banks of known harmful media by hash.",
        epilog="Start here: `vigil up` runs the embedded stack; in another shell `vigil bank create demo "
               "--action block`, `vigil bank add demo photo.jpg`, `vigil submit copy.jpg --wait`. "
               "Exit codes: 0 ok, 1 failure, 2 bad usage/input, 3 service unreachable, 4 timeout.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    nouns = p.add_subparsers(dest="noun", metavar="NOUN", required=True)

    up = nouns.add_parser("up", help="run broker, Redis, topics and all workers in the foreground",
                          description="Starts the embedded broker (tansu) and redis-server on free loopback ports "
                                      "unless --kafka/--redis point at real ones, creates the topics, starts the "
                                      "workers and prints where everything listens. Ctrl-C stops everything.")
    _service_flags(up, media=True)
    up.add_argument("--hashers", type=int, default=1, help="hasher processes (default 1)")
    up.add_argument("--matchers", type=int, default=1, help="matcher processes (default 1)")
    up.add_argument("--partitions", type=int, help="partitions per topic when creating them (default 6)")
    up.add_argument("--metrics-port", type=int, help="first worker's metrics port; the rest count up (default: free)")
    up.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for workers to be ready")
    up.set_defaults(func=cmd_up)

    worker = nouns.add_parser("worker", help="run one worker process (for deployments that scale them apart)")
    kinds = worker.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, text in (("hasher", "consume uploads, decode media, publish hashes"),
                       ("matcher", "match hashes against the bank, publish decisions")):
        k = kinds.add_parser(kind, help=text, description=text)
        _service_flags(k, media=(kind == "hasher"))
        k.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (env VIGIL_METRICS_PORT)")
        if kind == "hasher":
            k.add_argument("--hasher-threads", type=int, help="decode/hash threads (env VIGIL_HASHER_THREADS)")
        k.set_defaults(func=cmd_worker)

    tp = nouns.add_parser("topics", help="create the topics on a broker")
    tverbs = tp.add_subparsers(dest="verb", metavar="VERB", required=True)
    tc = tverbs.add_parser("create", help="create missing topics (existing ones are left alone)")
    _service_flags(tc)
    tc.add_argument("--partitions", type=int, help="partitions for uploads/hashes/decisions (default 6)")
    tc.add_argument("--json", action="store_true", help="machine-readable output")
    tc.set_defaults(func=cmd_topics_create)

    bank = nouns.add_parser("bank", help="manage banks of known-bad (or allowlisted) hashes in Redis",
                            description="Banks hold entries; each bank has an action: block, review, or allow "
                                        "(an allowlist that suppresses other banks' matches). Running matchers "
                                        "see every change within a second, without a restart.")
    bverbs = bank.add_subparsers(dest="verb", metavar="VERB", required=True)

    def bank_cmd(name: str, help_: str, func: Callable, **kw: Any) -> argparse.ArgumentParser:
        b = bverbs.add_parser(name, help=help_, description=help_, **kw)
        b.add_argument("--redis", metavar="URL", help="Redis URL (env VIGIL_REDIS)")
        b.add_argument("--actor", help="who this change is attributed to in the audit stream (env VIGIL_ACTOR)")
        b.add_argument("--json", action="store_true", help="machine-readable output")
        b.set_defaults(func=func)
        return b

    b = bank_cmd("create", "create a bank", cmd_bank_create)
    b.add_argument("name")
    b.add_argument("--action", required=True, choices=("block", "review", "allow"))
    b.add_argument("--label", help="what the bank holds: csam, ncii, terror, deepfake, or your own")
    b.add_argument("--threshold", action="append", metavar="SIGNAL=N", help="per-signal max distance, e.g. pdq=31")
    b.add_argument("--dihedral", action="store_true", help="also match flipped and rotated copies")
    b.add_argument("--live-strict", action="append", metavar="SIGNAL=N",
                   help="livestreams: one frame at or under this distance blocks (default pdq=16, phash=4)")
    b.add_argument("--live-frames", type=int, default=2,
                   help="livestreams: this many matched frames within --live-window block (default 2)")
    b.add_argument("--live-window", type=float, default=10.0, metavar="SECONDS",
                   help="livestreams: the sliding window for --live-frames (default 10)")
    b.add_argument("--exist-ok", action="store_true", help="succeed if it already exists with the same action")
    b = bank_cmd("add", "hash media files and add them as entries", cmd_bank_add)
    b.add_argument("name")
    b.add_argument("files", nargs="+", metavar="FILE")
    b.add_argument("--label")
    b.add_argument("--note")
    b = bank_cmd("import", "import a hash list: ThreatExchange/HMA local file (`<signal> <hex>` lines), CSV, "
                           "StopNCII JSON, NCMEC XML or Tech Against Terrorism JSON", cmd_bank_import)
    b.add_argument("name")
    b.add_argument("file")
    b.add_argument("--format", default="auto", choices=("auto", "local", "csv", "stopncii", "ncmec", "tat"),
                   help="list format (default: detect from the extension and content)")
    b.add_argument("--label", help="label for the imported entries (default: the list's own category)")
    b.add_argument("--skip-invalid", action="store_true",
                   help="load the valid lines and report the rest (default: all or nothing)")
    b.add_argument("--no-snapshot", action="store_true",
                   help="do not write the bank's snapshot at the end (default: write it, as `vigil bank snapshot`)")
    bank_cmd("list", "banks with their enabled entries per signal and snapshot lag", cmd_bank_list)
    b = bank_cmd("snapshot", "write binary snapshots of banks for fast matcher cold starts", cmd_bank_snapshot,
                 epilog="A matcher starting up GETs each bank's snapshot (a few ~8 MB strings per signal) instead of "
                        "scanning its packed codes hash field by field (10M entries: ~26 s of Redis time), then "
                        "replays every change made since the snapshot. Re-run it periodically (e.g. hourly, "
                        "`--all` from a CronJob) so that replay stays short; a snapshot older than the change "
                        "stream's oldest entry (the stream keeps ~1M changes) is ignored and matchers fall back to "
                        "the scan. Writing one is safe while banks change: changes made meanwhile are replayed. "
                        "It then trims the change stream to what readers still need: changes after every bank's "
                        "oldest snapshot, and the last 10 minutes for running matchers.")
    b.add_argument("names", nargs="*", metavar="NAME", help="banks to snapshot")
    b.add_argument("--all", action="store_true", help="every bank with packed codes (others are listed as skipped)")
    b = bank_cmd("backfill", "write the packed codes of a bank created before they existed (codes-v2)",
                 cmd_bank_backfill,
                 epilog="Reads every entry's JSON and writes its packed codes, then marks the bank codes-v2 so "
                        "matchers load it from the codes (and it can be snapshotted). Stop the bank's writers "
                        "(imports, `vigil bank add/remove/disable`) first: a change made during the backfill can be "
                        "overwritten with the entry's older state. Re-running it is harmless.")
    b.add_argument("name")
    b = bank_cmd("remove", "remove entries from a bank", cmd_bank_remove)
    b.add_argument("name")
    b.add_argument("entry_ids", nargs="+", metavar="ENTRY_ID")
    for verb, text in (("disable", "stop entries matching at once, keeping them for audit (a tombstone)"),
                       ("enable", "let disabled entries match again")):
        b = bank_cmd(verb, text, cmd_bank_entry_state)
        b.add_argument("name")
        b.add_argument("entry_ids", nargs="+", metavar="ENTRY_ID")
    b = bank_cmd("update", "change a bank: action, enabled, label, thresholds, dihedral", cmd_bank_update)
    b.add_argument("name")
    b.add_argument("--action", choices=("block", "review", "allow"))
    g = b.add_mutually_exclusive_group()
    g.add_argument("--enable", action="store_true", help="the bank matches again")
    g.add_argument("--disable", action="store_true", help="the whole bank stops matching at once")
    b.add_argument("--label")
    b.add_argument("--threshold", action="append", metavar="SIGNAL=N", help="per-signal max distance, e.g. pdq=20")
    b.add_argument("--dihedral", choices=("on", "off"))
    b = bank_cmd("stats", "entries per signal, snapshot lag, Redis memory, version and last change", cmd_bank_stats)
    b.add_argument("--count-disabled", action="store_true",
                   help="also count disabled entries (reads every entry's JSON: minutes at 10M entries)")
    b = bank_cmd("export", "write a bank's hashes as a list", cmd_bank_export)
    b.add_argument("name")
    b.add_argument("--format", choices=("local", "csv"), default="local",
                   help="local: `<signal> <hex>` lines (ThreatExchange/HMA); csv: signal,hash,label,source,note")
    b.add_argument("--output", "-o", metavar="FILE", help="default: standard output")

    sub = nouns.add_parser("submit", help="submit local files as upload events",
                           description="Produces one moderation.uploads event per file (media_uri=file://...). "
                                       "The files must be under a hasher's media roots.")
    _service_flags(sub)
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub.add_argument("--wait", action="store_true", help="print each decision (or dead letter) as it arrives")
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait with --wait (default 60)")
    sub.add_argument("--with-path", action="store_true", help="put the local path in the event's metadata")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.set_defaults(func=cmd_submit)

    live = nouns.add_parser("live", help="livestreams: push sampled frames, watch live decisions",
                            description="Live frames go to moderation.live-frames (key=stream_id, value=JPEG/PNG/"
                                        "WebP bytes, headers stream_id, seq, captured_at_ms, content_type, "
                                        "end_of_stream). Decisions come back on moderation.decisions with "
                                        "source=live: the first review, the first block, and an end-of-stream summary.")
    lverbs = live.add_subparsers(dest="verb", metavar="VERB", required=True)
    lp = lverbs.add_parser("push", help="sample a local video (or a directory of images) and push frames in real time")
    _service_flags(lp)
    lp.add_argument("source", metavar="VIDEO_OR_DIR")
    lp.add_argument("--stream-id", required=True)
    lp.add_argument("--fps", type=float, default=1.0, help="frames per second to sample and push (default 1)")
    lp.add_argument("--max-frames", type=int, help="stop after this many frames")
    lp.add_argument("--loop", action="store_true", help="start over at the end of the source")
    lp.add_argument("--fast", action="store_true", help="do not wait between frames (load testing)")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(func=cmd_live_push)
    lw = lverbs.add_parser("watch", help="print live decisions as they arrive")
    _service_flags(lw)
    lw.add_argument("--stream-id", help="only this stream")
    lw.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    lw.add_argument("--from-beginning", action="store_true", help="also print decisions already on the topic")
    lw.add_argument("--json", action="store_true", help="one JSON decision per line")
    lw.set_defaults(func=cmd_live_watch)

    from workers.ops import status

    status.add_parser(nouns)

    demo = nouns.add_parser("demo", help="run the whole pipeline on the embedded stack with sample photos")
    demo.add_argument("--keep", action="store_true", help="keep going after a wrong decision (exit 1 at the end)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    from workers.signals import limit_native_threads

    limit_native_threads()
    try:
        return args.func(args)
    except CliError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from workers.bank.store import BankError

        if isinstance(exc, BankError):
            print(f"vigil: {exc}", file=sys.stderr)
            return EXIT_USAGE
        import redis

        if isinstance(exc, redis.ConnectionError):
            print(f"vigil: Redis unreachable: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        raise


if __name__ == "__main__":
    sys.exit(main())
