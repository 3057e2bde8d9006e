"""Video frame sampling with PyAV: which frames of an upload get perceptually hashed.

Three strategies share one decode loop:

* ``keyframes`` (default): every keyframe, which costs one intra-frame decode per GOP. Where a
  stream goes longer than ``max_keyframe_gap_s`` without a keyframe, that stretch is filled at
  ``fps`` so a sparse-keyframe encode (screen recordings, intra-refresh, a single-GOP clip)
  cannot hide minutes of content.
* ``fixed``: the first frame at or after each tick of a ``fps`` grid.
* ``all``: every frame (for building bank entries, which are then deduplicated).

``windows`` restricts ``fixed`` to stretches of the stream: the hasher's dense re-decode around a
frame that came near a banked video (workers/signals/hashing.py), so a few seconds of banked
footage inside a long upload are measured with enough frames. Packets outside every window are
demuxed but not decoded, and demuxing stops after the last window.

The loop demuxes every packet (cheap) but decodes lazily: packets of the current GOP are kept
and only fed to the decoder once a wanted frame is reachable, and a new keyframe discards the
rest of the GOP. That is the seek-and-decode trade-off done per GOP without container seeks:
a tick in a later GOP never pays for decoding the frames between ticks.

Timestamps are ``pts * time_base`` from the stream start (variable frame rate safe); the
container's duration is only reported, never used as a loop bound. Rotation from the display
matrix is applied so frames are upright. Limits stop sampling and mark the result partial, and a
damaged file is sampled as far as it decodes and marked partial too: a demuxer or decoder error,
a packet the container marks corrupt (an MPEG-TS continuity break, a short FLV tag), fewer
frames than the index lists, or a file that ends inside its container's own packet
(workers.media.probe.cut_inside_packet). The file is opened through workers.media.probe, under
the same probe limits and demuxer allow-list as deciding whether it is a video at all.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
from av.video.reformatter import VideoReformatter

from workers.errors import MediaError
from workers.media.frame_pixels import upright_pixels
from workers.media.probe import cut_inside_packet, open_container
from workers.media.sampling_plan import (  # noqa: F401  (re-exported: callers import them from here)
    STRATEGIES,
    SamplingStrategy,
    VideoFrame,
    VideoLimits,
    merge_windows,
)

# Stop after this many consecutive packets the decoder rejects: the rest is noise, not video.
MAX_CONSECUTIVE_DECODE_ERRORS = 25


def sample_frames(
    path: str | os.PathLike,
    strategy: SamplingStrategy = SamplingStrategy(),
    limits: VideoLimits = VideoLimits(),
    *,
    max_side: int | None = None,
    threads: int = 1,
    grey: bool = False,
) -> "VideoSampling":
    """Frames of the video at ``path``; iterate the result, then read its summary attributes.

    ``max_side`` downscales while converting (the long side at most this many pixels); perceptual
    hashes do not need full resolution, but PDQ drifts as frames shrink: 640 px costs a median 4
    bits against full-size hashes, 512 px 9-10 bits, 320 px 12-15 (benchmarks/bench_video.py). ``threads`` is the decoder's thread count; the default of
    one leaves parallelism to the worker, which hashes several uploads at once. ``grey``
    converts to full-range luma instead of RGB: the fast hashes only use luma, and converting
    and scaling one plane costs under half of RGB (against RGB frames PDQ moves a median 0-2
    bits, at most 12 of 256 on the bench clips; pHash a median 0, at most 4 of 64).
    Raises MediaError on iteration: decode_failed (nothing decodable), no_video_stream (audio
    only: dead-lettered rather than allowed, since nothing was checked), image_too_large (frame dimensions over max_pixels).
    """
    return VideoSampling(os.fspath(path), strategy, limits, max_side, threads, grey)


class _Stop(Exception):
    """Internal: a limit was reached while emitting frames."""


@dataclass
class _Gop:
    """Packets since the last keyframe and how many of them the decoder has consumed."""

    packets: list = field(default_factory=list)
    fed: int = 0  # 0 also after a drain: the decoder is clean and the GOP refeeds from its keyframe


class VideoSampling:
    """One pass over one video. Iterate once; the attributes summarise what the pass saw."""

    def __init__(self, path: str, strategy: SamplingStrategy, limits: VideoLimits,
                 max_side: int | None, threads: int, grey: bool = False):
        self.path = path
        self.strategy = strategy
        self.limits = limits
        self.max_side = max_side
        self.threads = threads
        self.grey = grey
        # One scaler for the pass: a frame's own reformatter rebuilds swscale's context per frame,
        # and swscale's default of a thread per core costs CPU time for no gain on 1 frame.
        self._scaler = VideoReformatter()
        # Summary, filled in while iterating.
        self.frames_decoded = 0
        self.frames_yielded = 0
        self.keyframes_seen = 0  # keyframe packets demuxed
        self.packets = 0
        self.partial = False
        self.partial_reason: str | None = None  # max_seconds | max_frames | max_bytes | corrupt | truncated
        self.duration_ms = 0  # stream time actually seen, not the container's claim
        self.container_duration_ms: int | None = None
        self.width = 0
        self.height = 0
        self.rotation = 0
        self.codec = ""
        self.format = ""  # FFmpeg's demuxer: mpegts, mov,mp4,..., matroska,webm, flv...
        self.corrupt_packets = 0  # packets the demuxer marked corrupt
        self.notes: list[str] = []
        self._started = False

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[VideoFrame]:
        if self._started:
            raise RuntimeError("a VideoSampling is iterated once; call sample_frames again")
        self._started = True
        # Probing (find_stream_info) would decode the first frame only to learn its pixel
        # format, and the pass decodes it again: skip that decode (a keyframe, 6-12 ms). The
        # option reaches only the probe's decoders, and only for formats that list streams
        # in their header; the pass's own decoder context is created without it.
        container = open_container(self.path, self.limits.probe, options={"skip_frame": "all"})
        try:
            yield from self._run(container)
        finally:
            container.close()

    def _run(self, container) -> Iterator[VideoFrame]:
        stream = self._pick_stream(container)
        self._setup(container, stream)
        gop = _Gop()
        try:
            for packet in self._packets(container, stream):
                is_key = bool(packet.is_keyframe)
                if is_key:
                    self.keyframes_seen += 1
                    yield from self._end_gop(stream, gop)
                    gop = _Gop([packet])
                elif not gop.packets:
                    self._note("stream does not start with a keyframe; decoding from its first packet")
                    gop.packets.append(packet)
                else:
                    gop.packets.append(packet)
                if self._should_feed(packet, is_key, gop):
                    yield from self._feed(stream, gop)
                    if self.strategy.kind == "keyframes" and is_key and not self._engaged() and not self._untimed:
                        # Get the keyframe out now rather than decoding the GOP's next frames.
                        yield from self._drain(stream, gop)
            yield from self._end_gop(stream, gop)
            yield from self._drain(stream, gop)
            if not self.partial and not self._windows_done and stream.frames and self.packets < stream.frames:
                # The index (MP4 sample table, AVI header) lists more frames than the file holds: cut short.
                self._mark_partial("truncated", f"the index lists {stream.frames} frames, the file holds {self.packets}")
            cut = None if self.partial else cut_inside_packet(self.path, self.format)
            if cut is not None:
                self._mark_partial("truncated", cut)
        except _Stop:
            pass
        if self.frames_decoded == 0:
            detail = f" ({self.notes[-1]})" if self.notes else ""
            raise MediaError("decode_failed", f"no decodable video frame{detail}")
        if self.container_duration_ms is not None and abs(self.container_duration_ms - self.duration_ms) > 1000 \
                and not self.partial:
            self._note(f"container claims {self.container_duration_ms} ms, stream has {self.duration_ms} ms")

    def _pick_stream(self, container):
        videos = [s for s in container.streams.video]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise MediaError("no_video_stream", f"no video stream (the file holds {', '.join(kinds)})")
        moving = [s for s in videos if not (s.disposition & av.stream.Disposition.attached_pic)]
        if not moving:
            self._note("only an attached picture (cover art); sampling it as a one-frame video")
        return (moving or videos)[0]

    def _setup(self, container, stream) -> None:
        ctx = stream.codec_context
        self.codec = ctx.name
        self.format = container.format.name
        cut = cut_inside_packet(self.path, self.format)  # a file-level fact: known before the first frame,
        if cut is not None:  # so a video blocked early (before it reaches the cut) still says partial
            self._mark_partial("truncated", cut)
        self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
        self._check_pixels(self.width, self.height)
        ctx.thread_count = max(1, int(self.threads))
        ctx.thread_type = "SLICE"  # frame threads add output delay, which lazy decoding pays for
        if container.duration is not None and container.duration > 0:
            self.container_duration_ms = int(container.duration * 1000 // av.time_base)
        tb = stream.time_base or Fraction(1, 90000)
        self._tb_num, self._tb_den = tb.numerator, tb.denominator
        self._origin = stream.start_time if stream.start_time is not None else None
        sar = stream.sample_aspect_ratio
        self._sar = float(sar) if sar and float(sar) > 0 else 1.0
        # The next frame time (s) a fixed-rate tick or a keyframe gap asks for.
        self._due = {"fixed": self.strategy.in_window(0.0),
                     "keyframes": self.strategy.max_keyframe_gap_s}.get(self.strategy.kind, -math.inf)
        # Past the last window (and the decoder's reordering, well under 1 s): nothing more to take.
        self._stop_after = self.strategy.windows[-1][1] + 1.0 if self.strategy.windows else math.inf
        self._windows_done = False
        self._candidate: float | None = None  # earliest unfed packet time at or after _due
        self._dirty = False  # the decoder has been fed since its last flush
        self._skipping = False  # the decoder discards non-reference frames (AVDISCARD_NONREF)
        self._last_t = -math.inf
        self._pending: list[float] = []  # times of packets fed whose frames have not come out yet
        self._key_times: set[float] = set()
        self._errors_in_row = 0
        # A raw elementary stream (.h264, .hevc, .m2v) has no timestamps at all: its frames are
        # decoded straight through, once each, and timed by counting them at the stream's rate.
        self._untimed: bool | None = None  # decided by the first packet
        rate = stream.average_rate or stream.guessed_rate
        self._rate = float(rate) if rate else 30.0
        self._clock = 0.0  # the next untimed frame's time (s)

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise MediaError("image_too_large",
                             f"video frames of {width}x{height} exceed {self.limits.max_pixels} pixels")

    # -- demux ---------------------------------------------------------------------------------
    def _packets(self, container, stream) -> Iterator:
        """Demuxed packets of the stream, inside the byte and duration limits."""
        read = 0
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self._mark_partial("corrupt", f"demuxing stopped at {self.duration_ms} ms: {exc}")
                return
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker; _end_gop drains instead
            self.packets += 1
            if self._untimed is None:
                self._untimed = packet.pts is None and packet.dts is None
            if packet.is_corrupt:
                self.corrupt_packets += 1
                if self.corrupt_packets == 1:  # one note, however many: notes stay bounded
                    self._mark_partial("corrupt", f"the container marks a packet near {self.duration_ms} ms corrupt "
                                                  f"(damaged or missing data); decoded as far as it goes")
            read += packet.size
            if read > self.limits.max_bytes:
                self._mark_partial("max_bytes", f"stopped after {self.limits.max_bytes} bytes of video")
                return
            t = self._packet_time(packet)
            if t is not None:
                if t > self.limits.max_seconds:
                    self._mark_partial("max_seconds", f"stopped at {self.limits.max_seconds:g} s of video")
                    return
                if t > self._stop_after:
                    self._windows_done = True
                    return
                end = t + self._seconds(packet.duration or 0)
                self.duration_ms = max(self.duration_ms, int(round(end * 1000)))
                if packet.is_keyframe:
                    self._key_times.add(round(t, 6))
            yield packet

    def _seconds(self, ticks: int) -> float:
        """Stream ticks as seconds: the same correctly rounded float as float(ticks * time_base),
        without building a Fraction per packet (that was ~10% of a keyframe pass)."""
        return ticks * self._tb_num / self._tb_den

    def _packet_time(self, packet) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            return None
        if self._origin is None:
            self._origin = ts
        return self._seconds(ts - self._origin)

    # -- lazy decoding -------------------------------------------------------------------------
    def _should_feed(self, packet, is_key: bool, gop: _Gop) -> bool:
        kind = self.strategy.kind
        if kind == "all" or self._engaged() or (kind == "keyframes" and is_key):
            return True
        t = self._packet_time(packet)
        if t is None:
            return True  # no timestamp to plan with: decode and let the frame times decide
        if t >= self._due - 1e-9 and (self._candidate is None or t < self._candidate):
            self._candidate = t
        if self._candidate is None:
            return False
        # The candidate (earliest unfed frame at or after the due time) is final once the decode
        # clock passes it: dts never exceeds pts, so no later packet can show an earlier frame.
        if packet.dts is None:
            return True
        return self._seconds(packet.dts - self._origin) >= self._candidate - 1e-9

    def _engaged(self) -> bool:
        """Does the decoder hold a fed frame that the strategy will take?"""
        if self.strategy.kind == "all":
            return bool(self._pending)
        return any(t >= self._due - 1e-9 for t in self._pending)

    def _feed(self, stream, gop: _Gop) -> Iterator[VideoFrame]:
        self._candidate = None
        self._dirty = True
        while gop.fed < len(gop.packets):
            packet = gop.packets[gop.fed]
            gop.fed += 1
            t = self._packet_time(packet)
            if t is not None:
                self._pending.append(t)
            # A frame shown before the due time is decoded only if later frames reference it.
            skip = (self.strategy.kind != "all" and t is not None and t < self._due - 1e-9
                    and not packet.is_keyframe)
            self._skip_nonref(stream, skip)
            yield from self._decode(stream, packet)

    def _skip_nonref(self, stream, skip: bool) -> None:
        if skip != self._skipping:
            stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip

    def _drain(self, stream, gop: _Gop) -> Iterator[VideoFrame]:
        """Flush the frames out of the decoder; the GOP must be refed from its keyframe to go on."""
        if self._dirty:
            yield from self._decode(stream, None)
        self._reset(stream, gop)

    def _reset(self, stream, gop: _Gop) -> None:
        if self._dirty:
            stream.codec_context.flush_buffers()
            self._dirty = False
        gop.fed = 0
        self._pending.clear()

    def _end_gop(self, stream, gop: _Gop) -> Iterator[VideoFrame]:
        """Called before a keyframe starts a new GOP."""
        if self._untimed:
            return  # nothing to plan with: decode straight on (a refeed would repeat frames)
        if self._candidate is not None:  # a wanted frame sits in the unfed tail: decode to it
            yield from self._feed(stream, gop)
        if not self._dirty:
            return
        if self._engaged():
            if gop.fed == len(gop.packets):
                return  # in step with the stream: decode straight on into the next GOP
            yield from self._drain(stream, gop)
        elif self.strategy.kind != "all":
            self._reset(stream, gop)  # what is left inside is not wanted

    def _decode(self, stream, packet) -> Iterator[VideoFrame]:
        try:
            frames = stream.decode(packet)
            self._errors_in_row = 0
        except av.error.EOFError:
            return
        except av.error.FFmpegError as exc:
            self._errors_in_row += 1
            if self._errors_in_row == 1:
                self._mark_partial("corrupt", f"undecodable packet near {self.duration_ms} ms: {exc}")
            if self._errors_in_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                self._mark_partial("corrupt", f"{self._errors_in_row} packets in a row did not decode")
                raise _Stop from None
            return
        for frame in frames:
            out = self._emit(frame)
            if out is not None:
                yield out

    # -- frames --------------------------------------------------------------------------------
    def _emit(self, frame) -> VideoFrame | None:
        self.frames_decoded += 1
        step = self._seconds(frame.duration) if frame.duration else 1.0 / self._rate
        if frame.pts is not None:
            t = self._seconds(frame.pts - (self._origin or 0))
        else:
            t = self._clock
            self._note(f"frames without timestamps (a raw stream); times counted at {self._rate:g} fps")
            self.duration_ms = max(self.duration_ms, int(round((t + step) * 1000)))
            if t > self.limits.max_seconds:
                self._mark_partial("max_seconds", f"stopped at {self.limits.max_seconds:g} s of video")
                raise _Stop
        self._clock = t + step
        # The decoder emits in display order: anything fed with an earlier time is not coming.
        self._pending = [p for p in self._pending if p > t + 1e-9]
        key = bool(frame.key_frame) or round(t, 6) in self._key_times
        if not self._takes(t, key):
            return None
        if t > self.limits.max_seconds:
            return None
        if self.frames_yielded >= self.limits.max_frames:
            self._mark_partial("max_frames", f"stopped after {self.limits.max_frames} frames")
            raise _Stop
        self._check_pixels(frame.width, frame.height)
        pixels, rotation = upright_pixels(self._scaler, frame, self._sar, self.max_side, self.grey, self.threads)
        if rotation:
            self.rotation = rotation
        self._last_t = t
        self._due = self.strategy.next_due(t, key)
        self.frames_yielded += 1
        return VideoFrame(pixels, int(round(t * 1000)), key)

    def _takes(self, t: float, key: bool) -> bool:
        if self._last_t > -math.inf and round(t * 1000) <= round(self._last_t * 1000):
            return False  # keep frame_ms strictly increasing (re-decoded or mistimed frames)
        return self.strategy.takes(t, key, self._due)

    # -- summary -------------------------------------------------------------------------------
    def _mark_partial(self, reason: str, note: str) -> None:
        if not self.partial:
            self.partial, self.partial_reason = True, reason
        self._note(note)

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def summary(self) -> dict:
        """The pass as a JSON-able dict, for logs and the hashes event."""
        return {
            "frames_decoded": self.frames_decoded,
            "frames_yielded": self.frames_yielded,
            "keyframes_seen": self.keyframes_seen,
            "partial": self.partial,
            "partial_reason": self.partial_reason,
            "duration_ms": self.duration_ms,
            "container_duration_ms": self.container_duration_ms,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "codec": self.codec,
            "format": self.format,
            "corrupt_packets": self.corrupt_packets,
            "strategy": self.strategy.kind,
            "notes": list(self.notes),
        }
