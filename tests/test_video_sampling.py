"""Sampling: the official policies against ../shared/conformance/sampling.json, plus hand-worked cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hico.errors import OptionError
from hico.video.sampling import (SamplingOptions, official_frame_indices, plan_samples, plan_samples_by_time,
                                 time_message)

SHARED = Path(os.environ.get("HICO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SAMPLING_JSON = SHARED / "conformance" / "sampling.json"


def _official_cases() -> list[dict]:
    if not SAMPLING_JSON.exists():
        return []
    return json.loads(SAMPLING_JSON.read_text())["cases"]


CASES = _official_cases()


@pytest.mark.skipif(not CASES, reason=f"fixture missing: {SAMPLING_JSON}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['sample']}-v{c['vlen']}-f{c['input_fps']}-m{c['max_num_frames']}"
                         f"-n{c['min_num_frames']}-l{c['local_num_frames']}-c{c['clip']}")
def test_matches_official_reader(case: dict) -> None:
    start, end = case["clip"] if case["clip"] else (None, None)
    options = SamplingOptions(policy=case["sample"], max_num_frames=case["max_num_frames"],
                              min_num_frames=case["min_num_frames"], local_num_frames=case["local_num_frames"],
                              start=start, end=end)
    plan = plan_samples(case["vlen"], case["input_fps"], options)
    assert list(plan.indices) == case["indices"]
    assert plan.time_msg == case["time_msg"]
    assert plan.duration == pytest.approx(case["duration"], abs=1e-9)


def test_fixture_covers_every_policy() -> None:
    if not CASES:
        pytest.skip(f"fixture missing: {SAMPLING_JSON}")
    policies = {c["sample"] if not c["sample"].startswith("fps") else "fps" for c in CASES}
    assert policies == {"dynamic_fps1", "middle", "fps"}


def test_middle_by_hand() -> None:
    # 10 frames into 4 intervals: bounds [0, 2, 5, 7, 10] -> middles (0+1)//2, (2+4)//2, (5+6)//2, (7+9)//2
    assert official_frame_indices(4, 10, "middle", 1.0, 4, 1) == [0, 3, 5, 8]


def test_middle_pads_short_video_with_last_frame() -> None:
    assert official_frame_indices(6, 3, "middle", 1.0, 6, 1) == [0, 1, 2, 2, 2, 2]


def test_dynamic_fps1_one_per_second_in_multiples_of_local() -> None:
    # 100 s at 10 fps: 100 // 8 = 12 segments -> 96 frames, inside [64, 512]
    plan = plan_samples(1000, 10.0, SamplingOptions())
    assert plan.num_frames == 96
    # official order: the cap (32) is applied before the floor (64), so the floor wins
    plan = plan_samples(1000, 10.0, SamplingOptions(max_num_frames=32))
    assert plan.num_frames == 64


def test_fps_policy_centres_samples() -> None:
    # 2 fps on a 10 fps video: seconds 0.25, 0.75, ... -> frames round(2.5)=2 (half to even), round(7.5)=8, ...
    assert official_frame_indices(-1, 20, "fps2", 10.0, -1, 1) == [2, 8, 12, 18]


def test_clip_offsets_and_end_margin() -> None:
    # 60 s at 10 fps, range 10-20 s: 100 frames from frame 100; 8 intervals with int bounds
    # [0, 12, 25, 37, 50, 62, 75, 87, 100] -> middles 5, 18, 30, 43, 55, 68, 80, 93, then + 100
    plan = plan_samples(600, 10.0, SamplingOptions(policy="middle", max_num_frames=8, min_num_frames=1,
                                                   start=10.0, end=20.0))
    assert plan.indices == (105, 118, 130, 143, 155, 168, 180, 193)
    assert plan.duration == pytest.approx(10.0)
    # an end past the video is clamped to duration - 0.1 s
    plan = plan_samples(600, 10.0, SamplingOptions(policy="middle", max_num_frames=4, min_num_frames=1, end=1e6))
    assert plan.duration == pytest.approx(59.9)


def test_time_message_format() -> None:
    assert time_message(12.345, 8) == "\nThe video lasts for 12.35 seconds, and 8 frames are uniformly sampled from it. "


def test_plain_options() -> None:
    assert plan_samples(3000, 30.0, SamplingOptions.plain(num_frames=5)).num_frames == 5
    assert plan_samples(120, 30.0, SamplingOptions.plain(fps=0.5)).indices == (30, 90)  # 4 s: seconds 1 and 3
    # a user cap below the official floor is honoured
    assert plan_samples(30000, 30.0, SamplingOptions.plain(max_frames=16)).num_frames == 16
    assert plan_samples(30000, 30.0, SamplingOptions.plain(fps=2, max_frames=7)).num_frames == 7


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_frames=0), "at least 1"),
    (dict(num_frames=-3), "at least 1"),
    (dict(fps=0), "positive"),
    (dict(fps=-1.5), "positive"),
    (dict(max_frames=0), "at least 1"),
    (dict(num_frames=4, fps=1), "not both"),
    (dict(start=5, end=5), "before end"),
    (dict(start=9, end=3), "before end"),
    (dict(end=-1), "after the start"),
    (dict(start=float("nan")), "finite"),
])
def test_nonsense_options_are_refused(kwargs: dict, words: str) -> None:
    with pytest.raises(OptionError, match=words):
        SamplingOptions.plain(**kwargs)


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(OptionError, match="unknown sampling policy 'rand'"):
        SamplingOptions(policy="rand")


def test_start_past_end_of_video_names_duration() -> None:
    with pytest.raises(OptionError, match=r"past the end of the video \(10.00 s long\)"):
        plan_samples(300, 30.0, SamplingOptions.plain(start=12))


# --- planning by time (variable frame rate) ----------------------------------------------------------------------

IRREGULAR = (0.0, 1.0, 5.0, 6.0, 10.0)  # five frames over 11 s: long holds between bursts


def test_by_time_takes_the_frame_on_screen_every_1_over_fps_seconds() -> None:
    # fps 0.5: samples at 1, 3, 5, 7, 9 s; on screen then: frames 1 (from 1 s), 1, 2 (from 5 s), 3 (from 6 s), 3
    plan = plan_samples_by_time(IRREGULAR, 11.0, SamplingOptions.plain(fps=0.5))
    assert plan.indices == (1, 1, 2, 3, 3)
    assert plan.duration == 11.0 and plan.time_msg == time_message(11.0, 5)


def test_by_time_middle_of_equal_time_slices() -> None:
    # 4 samples of 11 s: slice middles 1.375, 4.125, 6.875, 9.625 s -> frames 1, 1, 3, 3
    assert plan_samples_by_time(IRREGULAR, 11.0, SamplingOptions.plain(num_frames=4)).indices == (1, 1, 3, 3)


def test_by_time_dynamic_fps1_counts_from_the_real_duration() -> None:
    # 100 s hold 20 frames at irregular times: the official rule on 100 s gives 96 samples (12 segments of 8), but
    # the 64-frame floor shrinks to 16 (the floor above the frame count falls to whole multiples of 8)
    times = np.cumsum(np.r_[0.0, np.full(19, 100 / 20)])
    plan = plan_samples_by_time(times, 100.0, SamplingOptions())
    assert plan.num_frames == 96
    assert plan.time_msg == time_message(100.0, 96)
    assert plan_samples_by_time(times, 100.0, SamplingOptions(max_num_frames=8, min_num_frames=64)).num_frames == 16


def test_by_time_range_is_clamped_like_the_official_reader() -> None:
    plan = plan_samples_by_time(IRREGULAR, 11.0, SamplingOptions.plain(fps=1, start=4.5, end=1e6))
    # 4.5 s to 10.9 s (0.1 s before the end): samples at 5, 6, ..., 10 s -> frames 2, 3, 3, 3, 3, 4
    assert plan.duration == pytest.approx(6.4) and plan.indices == (2, 3, 3, 3, 3, 4)
    with pytest.raises(OptionError, match="at or past the end"):
        plan_samples_by_time(IRREGULAR, 11.0, SamplingOptions.plain(fps=1, start=20))
