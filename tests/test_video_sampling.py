"""Sampling: the official policies against ../shared/conformance/sampling.json, plus hand-worked cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hico.errors import OptionError
from hico.video.sampling import SamplingOptions, official_frame_indices, plan_samples, time_message

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
