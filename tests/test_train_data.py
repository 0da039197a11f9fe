"""Training data: conversation records, official sampling strategies (hand-counted), mixture YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hico.errors import OptionError
from hico.train.data import load_conversations, load_mixture, read_mixture, select


def _record(i: int, **extra) -> dict:
    return {"conversations": [{"from": "human", "value": f"<image>\nQ{i}"}, {"from": "gpt", "value": f"A{i}"}],
            "video": f"v{i}.mp4", **extra}


def _write(path: Path, records: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_records_become_samples(tmp_path) -> None:
    records = [_record(0, start=1.5, end=4), {"conversations": [{"from": "human", "value": "hi"},
                                                                {"from": "gpt", "value": "hello"}]},
               {"image": "p.jpg", "conversations": [{"from": "human", "value": "<image> what?"},
                                                     {"from": "gpt", "value": "a cat"},
                                                     {"from": "human", "value": "colour?"},
                                                     {"from": "gpt", "value": "grey"}]}]
    for name in ("d.json", "d.jsonl"):
        video, text, image = load_conversations(_write(tmp_path / name, records), tmp_path / "media")
        assert video.turns == (("user", "<image>\nQ0"), ("assistant", "A0"))
        assert video.video == str(tmp_path / "media" / "v0.mp4") and (video.start, video.end) == (1.5, 4.0)
        assert text.video is None and text.image is None
        assert image.image == str(tmp_path / "media" / "p.jpg") and len(image.turns) == 4
        assert image.source == f"{name}#2"


@pytest.mark.parametrize("record, message", [
    ({"video": "v.mp4"}, "needs a 'conversations' list"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "'from' \\(human or gpt\\)"),
    ({"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}, "must alternate"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "no answer to learn from"),
    ({"video": "v.mp4", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "found 0 <image> placeholders"),
    (_record(0, image="x.jpg"), "either a video or an image"),
    (_record(0, start=5, end=2), "start \\(5\\) must be before end"),
])
def test_bad_records_name_the_record(tmp_path, record, message) -> None:
    path = _write(tmp_path / "bad.json", [_record(0), record])
    with pytest.raises(OptionError, match=f"bad.json#1: .*{message}"):
        load_conversations(path)


def test_sampling_strategies_by_hand() -> None:
    samples = list(range(10))
    assert select(samples, "all") == samples
    assert select(samples, "first:25%") == [0, 1, 2]  # ceil(2.5) = 3, as the official loader
    assert select(samples, "end:10%") == [9]
    assert select(samples, "first:4") == [0, 1, 2, 3]
    assert select(samples, "end:30") == samples
    drawn = select(samples, "random:50%", seed=1)
    assert len(drawn) == 5 and len(set(drawn)) == 5 and drawn == select(samples, "random:50%", seed=1)
    assert drawn != select(samples, "random:50%", seed=2)
    for bad in ("most", "first", "first:x%", "random:150%"):
        with pytest.raises(OptionError, match="sampling_strategy"):
            select(samples, bad)


def test_mixture_in_the_official_layout(tmp_path) -> None:
    (tmp_path / "ann").mkdir()
    _write(tmp_path / "ann" / "short.json", [_record(i) for i in range(8)])
    _write(tmp_path / "ann" / "long.jsonl", [_record(i) for i in range(20)])
    mix = tmp_path / "stage3.yaml"
    mix.write_text("datasets:\n"
                   "  - json_path: ann/short.json\n    data_root: videos/short\n    sampling_strategy: all\n"
                   "    video_read_type: decord\n"
                   "  - json_path: ann/long.jsonl\n    sampling_strategy: first:25%\n")
    specs = read_mixture(mix)
    assert [Path(s.data_root) for s in specs] == [tmp_path / "videos" / "short", tmp_path / "ann"]
    samples = load_mixture(mix)
    assert len(samples) == 8 + 5
    assert samples[0].video == str(tmp_path / "videos" / "short" / "v0.mp4")
    assert samples[-1].source == "long.jsonl#4"
    mix.write_text("datasets:\n  - json_path: ann/short.json\n    sampling_strategy: middle:5%\n")
    with pytest.raises(OptionError, match="unknown sampling_strategy 'middle:5%'"):
        read_mixture(mix)
    mix.write_text("datasets:\n  - data_root: x\n")
    with pytest.raises(OptionError, match="dataset 0 has no json_path"):
        read_mixture(mix)
    mix.write_text("datasets: [unclosed\n")
    with pytest.raises(OptionError, match="not valid YAML"):
        read_mixture(mix)
