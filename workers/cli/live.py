"""`vigil live push|watch`: send a stream's frames, and watch live decisions."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from workers.cli.common import EXIT_OK, CliError, need, service_flags, settings_from


HELP_ORDER = 45  # where `vigil --help` lists this noun


def cmd_live_push(args: argparse.Namespace) -> int:
    """Sample a video (or walk a directory of images) and push frames in real time."""
    from workers.errors import MediaError
    from workers.live.source import frames_from
    from workers.live.streams import LiveFrameProducer
    from workers.media.probe import probe_limits

    settings = settings_from(args)
    need(settings, "kafka")
    source = Path(args.source)
    if not source.exists():
        raise CliError(f"no such file or directory: {source}")
    producer = LiveFrameProducer(settings)
    period = 1.0 / args.fps
    seq, next_at = 0, time.monotonic()
    try:
        for jpeg in frames_from(source, args.fps, loop=args.loop, probe=probe_limits(settings)):
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
    except MediaError as exc:  # not an image or a video (decode_failed), or audio only (no_video_stream)
        producer.end_stream(args.stream_id, seq)
        producer.flush()
        raise CliError(f"{source.name}: {exc.code}: {exc.message}") from None
    producer.end_stream(args.stream_id, seq)
    producer.flush()
    print(json.dumps({"stream_id": args.stream_id, "frames": seq}) if args.json
          else f"\npushed {seq} frames and end_of_stream for {args.stream_id}")
    return EXIT_OK


def cmd_live_watch(args: argparse.Namespace) -> int:
    from workers.stream.client import OutcomeWatcher

    settings = settings_from(args)
    need(settings, "kafka")
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


def add_parser(nouns: argparse._SubParsersAction) -> None:
    live = nouns.add_parser("live", help="livestreams: push sampled frames, watch live decisions",
                            description="Live frames go to moderation.live-frames (key=stream_id, value=JPEG/PNG/"
                                        "WebP bytes, headers stream_id, seq, captured_at_ms, content_type, "
                                        "end_of_stream). Decisions come back on moderation.decisions with "
                                        "source=live: the first review, the first block, and an end-of-stream summary.")
    lverbs = live.add_subparsers(dest="verb", metavar="VERB", required=True)
    lp = lverbs.add_parser("push", help="sample a local video (or a directory of images) and push frames in real time")
    service_flags(lp)
    lp.add_argument("source", metavar="VIDEO_OR_DIR")
    lp.add_argument("--stream-id", required=True)
    lp.add_argument("--fps", type=float, default=1.0, help="frames per second to sample and push (default 1)")
    lp.add_argument("--max-frames", type=int, help="stop after this many frames")
    lp.add_argument("--loop", action="store_true", help="start over at the end of the source")
    lp.add_argument("--fast", action="store_true", help="do not wait between frames (load testing)")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(func=cmd_live_push)
    lw = lverbs.add_parser("watch", help="print live decisions as they arrive")
    service_flags(lw)
    lw.add_argument("--stream-id", help="only this stream")
    lw.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    lw.add_argument("--from-beginning", action="store_true", help="also print decisions already on the topic")
    lw.add_argument("--json", action="store_true", help="one JSON decision per line")
    lw.set_defaults(func=cmd_live_watch)

