"""Synthetic video QA: seeded, answers point at the truth, events land on their frames, haystacks vary."""

from __future__ import annotations

import json
import random
import re

import av
import numpy as np
import pytest

from hico.errors import OptionError
from hico.niah.synthetic import QUESTIONS, draw_picture
from hico.synthqa import HELDOUT_PHOTOS, TRAIN_PHOTOS, TaskOptions, photo_path, plan_task, render, write_task_set

OPTION = re.compile(r"\(([ABCD])\) ([^\n]+)")


def _options(question: str) -> dict[str, str]:
    return dict(OPTION.findall(question))


def test_answers_point_at_the_truth() -> None:
    rng = random.Random(5)
    options = TaskOptions(min_frames=16, max_frames=64)
    seen = set()
    for _ in range(200):
        task = plan_task(rng, options)
        seen.add(task.kind)
        choices = _options(task.question)
        assert len(choices) == 4 and len(set(choices.values())) == 4 and task.question.endswith("Best option: (")
        right = choices[task.answer]
        clips = [e.clip for e in task.events]
        assert clips == sorted(set(clips)) and max(clips) < task.frames // 4
        if task.kind == "count":
            shape = re.search(r"does an? (\w+) appear", task.question).group(1)
            assert int(right) == sum(e.spec.shape == shape for e in task.events)
        elif task.kind == "order":
            assert right == task.events[0].spec.shape
        else:
            caption = re.match(r"Find the frame of (.+?)\. ", task.question).group(1)
            asked = next(a for a, q in QUESTIONS.items() if q in task.question)
            targets = [e.spec for e in task.events if e.spec.caption(asked) == caption]
            assert len(targets) == 1 and targets[0].value(asked) == right  # the caption names one event
            assert f" {right} " not in f" {caption} "  # and never gives the answer away
    assert seen == {"needle", "attribute", "count", "order"}


def test_task_set_is_seeded_and_events_land_on_their_frames(tmp_path) -> None:
    options = TaskOptions(videos=4, min_frames=8, max_frames=24, seed=3)
    first = write_task_set(tmp_path / "a", options, progress=False)
    second = write_task_set(tmp_path / "b", options, progress=False)
    assert first.read_text() == second.read_text()
    assert write_task_set(tmp_path / "c", TaskOptions(videos=4, min_frames=8, max_frames=24, seed=4),
                          progress=False).read_text() != first.read_text()
    with pytest.raises(OptionError, match="exists"):
        write_task_set(tmp_path / "a", options, progress=False)
    records = json.loads(first.read_text())
    rng = random.Random(3)
    for record in records:
        task = plan_task(rng, options)
        expected = render(task, options.size, rng)  # the same draws as the writer made
        with av.open(str(tmp_path / "a" / record["video"])) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert frames.shape == (task.frames, 64, 64, 3)
        assert np.abs(frames.astype(int) - expected).mean() < 6  # H.264 at 64x64, close to the source
        for event in task.events:
            picture = np.asarray(draw_picture(event.spec, 64)).astype(int)
            for k in range(4):
                assert np.abs(frames[event.clip * 4 + k].astype(int) - picture).mean() < 10
        assert [e["frame"] for e in record["events"]] == [e.clip * 4 for e in task.events]
        assert record["conversations"][1]["value"] == task.answer


def test_photos_and_options() -> None:
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    for name in TRAIN_PHOTOS + HELDOUT_PHOTOS:
        assert photo_path(name).exists()
    with pytest.raises(OptionError, match="no sample photo named 'nope'"):
        photo_path("nope")
    for bad in (dict(videos=0), dict(min_frames=10), dict(min_frames=64, max_frames=32), dict(kinds=("story",)),
                dict(haystacks=("noise",)), dict(size=16)):
        with pytest.raises(OptionError):
            TaskOptions(**bad)
