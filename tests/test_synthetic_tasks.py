"""Synthetic video QA: seeded, answers point at the truth, events land on their frames, haystacks vary."""

from __future__ import annotations

import json
import random
import re

import av
import numpy as np
import pytest

from hico.errors import OptionError
from hico.synthetic.pictures import QUESTIONS, draw_picture
from hico.synthetic.tasks import (CAPTION_QUESTION, HELDOUT_PHOTOS, TRAIN_PHOTOS, VARIED_PHOTOS, TaskOptions, augment_photo,
                          photo_path, plan_task, render, shot_haystack, write_demo_video, write_haystack,
                          write_task_set)

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


VARIED = dict(haystacks=("shots", "photo"), photos=VARIED_PHOTOS, augment=True)


@pytest.mark.parametrize("scenes", [{}, VARIED], ids=["plain", "varied"])
def test_task_set_is_seeded_and_events_land_on_their_frames(tmp_path, scenes) -> None:
    options = TaskOptions(videos=4, min_frames=8, max_frames=24, seed=3, **scenes)
    first = write_task_set(tmp_path / "a", options, progress=False)
    second = write_task_set(tmp_path / "b", options, progress=False)
    assert first.read_text() == second.read_text()
    assert write_task_set(tmp_path / "c", TaskOptions(videos=4, min_frames=8, max_frames=24, seed=4, **scenes),
                          progress=False).read_text() != first.read_text()
    with pytest.raises(OptionError, match="exists"):
        write_task_set(tmp_path / "a", options, progress=False)
    records = json.loads(first.read_text())
    rng = random.Random(3)
    for record in records:
        task = plan_task(rng, options)
        expected = render(task, options.size, rng, options.photos, options.augment)  # the writer's draws
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
    assert not set(VARIED_PHOTOS) & set(HELDOUT_PHOTOS) and set(TRAIN_PHOTOS) < set(VARIED_PHOTOS)
    for name in VARIED_PHOTOS + HELDOUT_PHOTOS:
        assert photo_path(name).exists()
    with pytest.raises(OptionError, match="no sample photo named 'nope'"):
        photo_path("nope")
    for bad in (dict(videos=0), dict(min_frames=10), dict(min_frames=64, max_frames=32), dict(kinds=("story",)),
                dict(haystacks=("noise",)), dict(size=16), dict(photos=())):
        with pytest.raises(OptionError):
            TaskOptions(**bad)
    with pytest.raises(OptionError, match="attributes"):
        TaskOptions(attributes=("size",))


def test_augmented_photos_are_seeded_turned_and_recoloured() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    outputs = [augment_photo(photo, np.random.default_rng(seed)) for seed in range(24)]
    assert augment_photo(photo, np.random.default_rng(3)).tobytes() == outputs[3].tobytes()
    assert {o.shape for o in outputs} == {(6, 10, 3), (10, 6, 3)} and all(o.dtype == np.uint8 for o in outputs)
    means = {tuple(o.reshape(-1, 3).mean(0).round()) for o in outputs}
    assert len(means) == len(outputs)  # every draw recolours differently
    grey = [o for o in outputs if (o[..., 0] == o[..., 1]).all() and (o[..., 1] == o[..., 2]).all()]
    assert len(grey) < len(outputs) // 2


def test_shot_haystacks_cut_between_scenes() -> None:
    frames = shot_haystack(48, 32, random.Random(2), VARIED_PHOTOS, shot=(8, 8), augment=True)
    change = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))  # between frame k and k+1
    cuts = change[7::8]
    within = np.delete(change, np.arange(7, len(change), 8))
    assert cuts.min() > within.max()  # every 8th frame starts another scene; pans and motion move slowly


def test_open_questions_and_reading_answer_from_the_picture() -> None:
    rng = random.Random(9)
    options = TaskOptions(kinds=("caption", "reading"), attributes=("colour", "shape"), min_frames=8, max_frames=8)
    seen = {"caption": 0, "reading": 0, "describe": 0}
    for _ in range(120):
        task = plan_task(rng, options)
        if task.kind == "reading":
            seen["reading"] += 1
            assert task.frames == 0 and not task.events  # text only
            said = re.match(r"The picture shows an? (\w+) (\w+) with the symbol (\w)\. ", task.question)
            right = _options(task.question)[task.answer]
            assert right in said.group(1, 2) and "symbol" not in task.question.split("Options:")[0].split(". ")[-1]
            continue
        (event,) = task.events
        if task.question == CAPTION_QUESTION:
            seen["describe"] += 1
            assert task.answer == f"{'an' if event.spec.colour[0] in 'aeiou' else 'a'} {event.spec.colour} " \
                                  f"{event.spec.shape}"
        else:
            seen["caption"] += 1
            asked = next(a for a, q in QUESTIONS.items() if task.question.endswith(q))
            assert asked in ("colour", "shape") and task.answer == event.spec.value(asked)
            assert task.question == f"Find the frame of {event.spec.caption(asked)}. {QUESTIONS[asked]}"
    assert min(seen.values()) > 10


def test_reading_records_have_no_video_and_half_the_prompts_take_the_niah_form(tmp_path) -> None:
    data = write_task_set(tmp_path / "set", TaskOptions(videos=6, kinds=("reading", "caption"), min_frames=8,
                                                         max_frames=8, seed=1), progress=False)
    records = json.loads(data.read_text())
    for record in records:
        prompt = record["conversations"][0]["value"]
        if record["kind"] == "reading":
            assert "video" not in record and "<image>" not in prompt
        else:
            assert (tmp_path / "set" / record["video"]).exists()
            assert prompt.startswith("<image>\n") == (record["id"] % 2 == 0)


def test_haystack_and_demo_video(tmp_path) -> None:
    path = write_haystack(tmp_path / "hay.mp4", 40, seed=2, progress=False)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 40
    with pytest.raises(OptionError, match="exists"):
        write_haystack(path, 40)
    spec, first = write_demo_video(tmp_path / "demo.mp4", frames=32, seed=4)
    assert first % 4 == 0 and 0 <= first < 32
    with av.open(str(tmp_path / "demo.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)
    picture = np.asarray(draw_picture(spec, 64)).astype(int)
    errors = [np.abs(frame - picture).mean() for frame in frames]
    assert max(errors[first:first + 4]) < 10 and min(errors[:first] + errors[first + 4:]) > 20
