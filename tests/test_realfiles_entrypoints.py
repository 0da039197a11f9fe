"""Every entry point on real files: `hico chat`, `hico eval`, an upload to `hico serve`, a NIAH haystack and a
training sample, each driven with the embedded toy model on files of the real-video corpus (tests/realvideo).

What is checked is what each entry point did with the file, not only that it ran: the frames, time message and
visual tokens the model was given equal the sampling plan `hico.video.Video(path).plan(...)` makes for that file,
16 tokens per sampled frame; the tokens of the first and last clip equal the model's encoding of the same frames
decoded straight by FFmpeg (PyAV), and the frames' times equal FFmpeg's timestamps; every benchmark item and NIAH
case is answered (none skipped); the training sample's clips and prompt follow the stage's sampling, and one
training step changes the weights.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import hico
import hico.api
from hico.cli import main
from hico.embedded import embedded_path
from hico.model import IMAGE_TOKEN_INDEX
from hico.video import SamplingOptions, Video
from hico.video.preprocess import preprocess

from realvideo_support import realvideo_files

# Corpus files (tests/realvideo/fetch): small ones, in different containers and codecs.
H264_MP4 = "usr__share__doc__halide14__tutorial__figures__lesson_05_fast.mp4"  # 128 frames, 25 fps, 5.12 s
MSVIDEO1_MKV = "usr__share__planetblupi__movie__play113.mkv"  # MS Video 1 in Matroska, 61 frames
THEORA_OGV = "usr__share__pymecavideo__data__video__Effet_force_magnetique.ogv"  # 34 frames
VFR_AVI = "usr__share__doc__opencv-doc__examples__data__tree.avi"  # variable frame rate: 68 frames over 29.5 s
MPEG4_AVI = "usr__share__doc__opencv-doc__examples__data__Megamind.avi"  # MPEG-4 part 2 in AVI, 270 frames
USED = (H264_MP4, MSVIDEO1_MKV, THEORA_OGV, VFR_AVI, MPEG4_AVI)

QUESTION = "Describe the picture in the video."
TOKENS_PER_FRAME, CLIP = 16, 4
TIME_MSG = re.compile(r"The video lasts for (\d+\.\d\d) seconds, and (\d+) frames are uniformly sampled from it\.")


@pytest.fixture(scope="module")
def corpus(realvideo) -> dict[str, Path]:
    files = {path.name: path for path in realvideo_files(realvideo)}
    missing = [name for name in USED if name not in files]
    assert not missing, f"the corpus lacks {missing}; tests/realvideo/packages changed?"
    return files


@pytest.fixture(scope="module")
def model() -> hico.Hico:
    return hico.load(embedded_path())


def planned(path: Path, sampling: SamplingOptions = SamplingOptions()):
    """The reader's plan for a file and the times of its frames."""
    with Video(path) as video:
        plan = video.plan(sampling)
        return plan, video.times(plan)


def ffmpeg_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a file as FFmpeg decodes it (RGB), in display order."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def ffprobe_times(path: Path) -> list[float | None] | None:
    """FFmpeg's time of every frame (its best-effort timestamp, which packed B-frames in AVI do not garble as
    PyAV's pts are) from the first frame, None for a frame it gives none; None without ffprobe."""
    if shutil.which("ffprobe") is None:
        return None
    lines = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout.split()
    stamps = [None if line.strip(",") == "N/A" else float(line.strip(",")) for line in lines]
    return [None if t is None else t - stamps[0] for t in stamps]


def clip_pixels(frames: list[np.ndarray], indices: list[int], size: int) -> torch.Tensor:
    """One clip of these frame indices, a short one padded with its last frame (as the reader pads)."""
    chosen = [frames[i] for i in indices]
    return preprocess(chosen + [chosen[-1]] * (CLIP - len(chosen)), size)


def check_against_ffmpeg(model: hico.Hico, path: Path, tokens: torch.Tensor, indices: list[int],
                         times: list[float] | None = None) -> None:
    """The first and last clip's tokens equal the model's encoding of FFmpeg's frames at these indices, and
    the times are FFmpeg's timestamps."""
    frames = ffmpeg_frames(path)
    assert max(indices) < len(frames), f"sampled index {max(indices)} of {len(frames)} decodable frames"
    last = (len(indices) - 1) // CLIP * CLIP
    size = model.model.config.vision.image_size
    clips = torch.stack([clip_pixels(frames, indices[:CLIP], size), clip_pixels(frames, indices[last:], size)])
    with torch.inference_mode():
        expected = model.model.encode_clips(clips)
    per_clip = TOKENS_PER_FRAME * CLIP
    torch.testing.assert_close(tokens[:per_clip], expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tokens[last * TOKENS_PER_FRAME:last * TOKENS_PER_FRAME + per_clip], expected[1],
                               rtol=1e-4, atol=1e-5)
    stamps = ffprobe_times(path) if times is not None else None
    if stamps is not None:
        assert len(stamps) == len(frames)
        known = [k for k, i in enumerate(indices) if stamps[i] is not None]
        assert len(known) >= len(indices) - 1
        assert [times[k] for k in known] == pytest.approx([stamps[indices[k]] for k in known], abs=2e-3)


# ---------------------------------------------------------------- 1. hico chat FILE "question"

@pytest.mark.parametrize("name", [H264_MP4, MSVIDEO1_MKV, THEORA_OGV, VFR_AVI, MPEG4_AVI],
                         ids=["h264-mp4", "msvideo1-mkv", "theora-ogv", "vfr-avi", "mpeg4-avi"])
def test_chat_answers_about_a_real_file(corpus, model, name, monkeypatch, capsys) -> None:
    path = corpus[name]
    memories, prompts = [], []  # what the command encoded and the prompt it built, seen through spies
    encode, prompt = hico.api.Hico.encode_video, hico.api.chat_prompt

    def encode_spy(self, *args, **kwargs):
        memories.append(encode(self, *args, **kwargs))
        return memories[-1]

    def prompt_spy(*args, **kwargs):
        prompts.append(prompt(*args, **kwargs))
        return prompts[-1]

    monkeypatch.setattr(hico.api.Hico, "encode_video", encode_spy)
    monkeypatch.setattr(hico.api, "chat_prompt", prompt_spy)
    assert main(["chat", str(path), QUESTION]) == 0
    answer = capsys.readouterr().out.strip()
    assert re.search(r"[a-z]", answer), f"no answer text: {answer!r}"
    (memory,), (text,) = memories, prompts
    plan, times = planned(path)
    assert memory.indices == list(plan.indices) and memory.time_msg == plan.time_msg
    assert memory.tokens.shape == (TOKENS_PER_FRAME * plan.num_frames, model.model.config.hidden_size)
    assert text.count("<image>") == 1 and f"<image>\n{plan.time_msg.strip()} {QUESTION}" in text
    stated = TIME_MSG.search(plan.time_msg)
    assert stated and int(stated.group(2)) == plan.num_frames, plan.time_msg
    check_against_ffmpeg(model, path, memory.tokens, memory.indices, memory.times)
    assert memory.times == times
    # the duration the prompt states covers the frames shown (a variable frame rate must not shorten it)
    assert float(stated.group(1)) >= times[-1], f"{plan.time_msg.strip()!r} but the last frame is at {times[-1]:.2f} s"
    assert model.answer(memory, QUESTION) == answer  # the API answers the CLI's memory the same way


# ---------------------------------------------------------------- 2. hico eval over a benchmark of real files

def test_eval_answers_every_item_of_a_benchmark_of_real_files(corpus, tmp_path, capsys) -> None:
    """An MLVU multiple-choice task (official annotation layout) whose videos are corpus files, under the names
    the annotation uses; two questions share the H.264 video. Official sampling (no override)."""
    names = {"lesson_05_fast.mp4": H264_MP4, "play113.mkv": MSVIDEO1_MKV, "magnetique.ogv": THEORA_OGV}
    folder = tmp_path / "videos" / "MVLU" / "MLVU" / "video" / "4_count"
    folder.mkdir(parents=True)
    for video, name in names.items():
        (folder / video).symlink_to(corpus[name])
    options = ["red", "green", "blue", "yellow"]
    records = [{"video": video, "duration": 5.0, "question": f"How many times does {thing} appear?",
                "candidates": options, "answer": options[k % 4], "question_type": "count"}
               for k, (video, thing) in enumerate([("lesson_05_fast.mp4", "a pixel"), ("play113.mkv", "a door"),
                                                   ("lesson_05_fast.mp4", "a tile"), ("magnetique.ogv", "a wire")])]
    annotation = tmp_path / "annotations" / "MLVU_MC" / "json" / "4_count.json"
    annotation.parent.mkdir(parents=True)
    annotation.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["eval", "mlvu_mc_count", "--annotations", str(tmp_path / "annotations"), "--video-root",
                 str(tmp_path / "videos"), "--out", str(out), "--no-progress"]) == 0
    assert "(4 scored, 0 skipped)" in capsys.readouterr().out
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [f"mlvu_mc_count/{k}" for k in range(4)]
    for result, record in zip(results, records):
        assert result["status"] == "ok", result
        assert isinstance(result["response"], str) and result["response"].strip(), result
        assert set(result["score"]) == {"official", "strict"}
        plan, _ = planned(corpus[names[record["video"]]], SamplingOptions(max_num_frames=512))  # MLVU's setting
        assert result["frames"] == plan.num_frames, record["video"]
    summary = json.loads((out / "summary.json").read_text())["tasks"]["mlvu_mc_count"]
    assert (summary["items"], summary["scored"], summary["skipped"]) == (4, 4, 0)


# ---------------------------------------------------------------- 3. an upload to hico serve

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi")
    from serve_support import start_server

    live = start_server(tmp_path_factory.mktemp("realfiles-serve"))
    yield live
    live.stop()


@pytest.mark.parametrize("name", [THEORA_OGV, H264_MP4], ids=["theora-ogv", "h264-mp4"])
def test_serve_answers_about_an_uploaded_real_file(corpus, model, server, name) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
    path = corpus[name]
    with open(path, "rb") as handle:
        file = client.files.create(file=handle, purpose="vision")
    assert file.bytes == path.stat().st_size and file.model_extra["hico"]["kind"] == "video"
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"hico://files/{file.id}"}},
                                             {"type": "text", "text": QUESTION}]}]
    reply = client.chat.completions.create(model="hico-embedded", messages=messages)
    answer = reply.choices[0].message.content
    assert re.search(r"[a-z]", answer) and reply.choices[0].finish_reason == "stop"
    plan, times = planned(path)
    sent = reply.model_extra["hico"]
    assert sent["frames"] == plan.num_frames and sent["indices"] == list(plan.indices)
    assert sent["time_msg"] == plan.time_msg.strip() and sent["times"] == pytest.approx(times, abs=1e-6)
    assert reply.usage.prompt_tokens_details.model_extra["visual_tokens"] == TOKENS_PER_FRAME * plan.num_frames
    assert answer == model.answer(model.encode_video(path), QUESTION)  # as the API answers the same file


# ---------------------------------------------------------------- 4. a NIAH haystack cut from a real video

def test_niah_haystack_cut_from_a_real_video(corpus, model, tmp_path, capsys) -> None:
    """`hico niah needles | build | run` with the H.264 file as the haystack (5 haystack frames a second: every
    5th of its 25 fps frames), open answers (the toy model answers in words)."""
    haystack, needles, bench = corpus[H264_MP4], tmp_path / "needles", tmp_path / "bench"
    assert main(["niah", "needles", "--out", str(needles), "--single", "2", "--multi", "1", "--size", "64"]) == 0
    assert main(["niah", "build", "--haystack", str(haystack),
                 "--needles", str(needles / "niah-synthetic-singlehop.json"),
                 "--needles", str(needles / "niah-synthetic-multihop.json"),
                 "--out", str(bench), "--frames", "16", "--depths", "0,0.5,1", "--haystack-fps", "5"]) == 0
    assert main(["niah", "run", str(bench), "--answer", "open"]) == 0
    capsys.readouterr()
    settings = json.loads((bench / "niah.json").read_text())["haystack"]
    frames = ffmpeg_frames(haystack)
    assert (settings["fps"], settings["step"], settings["looped"]) == (25.0, 5, False)
    assert settings["unique_frames"] == -(-len(frames) // 5)
    (cached,) = (bench / "cache").iterdir()  # the haystack's tokens: frames 0, 5, 10, ... of the file
    memory = hico.memory.VideoMemory.load(cached)
    assert memory.indices == [5 * i for i in range(16)]
    assert memory.tokens.shape == (16 * TOKENS_PER_FRAME, model.model.config.hidden_size)
    check_against_ffmpeg(model, haystack, memory.tokens, memory.indices, memory.times)
    cases = [json.loads(line) for line in (bench / "cases.jsonl").read_text().splitlines()]
    (results,) = bench.glob("results-*-open.jsonl")
    done = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(cases) == 2 * 3 + 1 and [r["case"] for r in done] == [c["case"] for c in cases]
    for record, case in zip(done, cases):
        assert record["visual_tokens"] == TOKENS_PER_FRAME * case["total_frames"]
        assert len(record["predictions"]) == len(case["questions"]) and all(p.strip() for p in record["predictions"])
    single = [ok for r in done if r["kind"] == "single" for ok in r["correct"]]
    assert sum(single) >= len(single) // 2, done  # the needles are found in a real haystack (chance: 1 in 8)
    assert (bench / "niah-report.md").exists() and (bench / "niah-single.png").exists()


# ---------------------------------------------------------------- 5. a training sample from a real video

def test_training_sample_from_a_real_video(corpus, tmp_path, capsys) -> None:
    """An official LLaVA-style record whose video is a corpus file: its features (dataset), then one step of
    `hico train --stage 2` from the embedded model."""
    from safetensors.torch import load_file

    from hico.train.data import load_conversations
    from hico.train.dataset import ConversationDataset, collate, prepare, sampling_options
    from hico.train.engine import TrainingModel
    from hico.train.stages import load_stage

    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "lesson_05_fast.mp4").symlink_to(corpus[H264_MP4])
    record = {"video": "media/lesson_05_fast.mp4",
              "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                {"from": "gpt", "value": "a yellow star"}]}
    data = tmp_path / "data.json"
    data.write_text(json.dumps([record]), encoding="utf-8")
    base = hico.load(embedded_path())
    config = load_stage(2, {"isolate_decode": False})
    samples, report = prepare(load_conversations(data), base.tokenizer, config, progress=False)
    assert len(samples) == 1 and not report.unreadable and not report.too_long
    plan, _ = planned(corpus[H264_MP4], sampling_options(config, samples[0]))
    # stage 2: dynamic_fps1 at about 1 fps in whole clips, 4 to 8 frames: 4 of this 5.12-second file
    assert plan.num_frames == 4 and (config.min_frames, config.max_frames) == (4, 8)
    features = ConversationDataset(samples, base.tokenizer, config, base.model.config.vision.image_size)[0]
    size = base.model.config.vision.image_size
    assert features["clips"].shape == (plan.num_frames // CLIP, CLIP, 3, size, size)
    frames = ffmpeg_frames(corpus[H264_MP4])
    expected = torch.stack([clip_pixels(frames, list(plan.indices[k:k + CLIP]), size)
                            for k in range(0, plan.num_frames, CLIP)])
    torch.testing.assert_close(features["clips"], expected, rtol=0, atol=1e-6)
    ids, targets = features["ids"], features["targets"]
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 1
    text = base.tokenizer.decode(ids[ids >= 0])
    assert f"{plan.time_msg.strip()} {QUESTION}" in text
    learned = base.tokenizer.decode(targets[targets >= 0])
    assert "a yellow star" in learned and QUESTION not in learned and "seconds" not in learned  # the answer only
    loss = TrainingModel(base.model)(**collate([features]))["loss"]
    assert torch.isfinite(loss) and loss > 0

    out = tmp_path / "out"
    assert main(["train", "--stage", "2", "--data", str(data), "--model", str(embedded_path()), "--output", str(out),
                 *[a for s in ("max_steps=1", "grad_accum=1", "warmup_ratio=0", "logging_steps=1", "save_steps=1000")
                   for a in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    assert "trained 1 steps" in printed and "1 of 1 samples kept" in printed
    logged = [float(m) for m in re.findall(r"'loss': '([0-9.]+)'", printed)]
    assert len(logged) == 1 and math.isfinite(logged[0]) and logged[0] > 0
    skips = json.loads((out / "skips.json").read_text())
    assert skips == {"total": 1, "too_long": [], "unreadable": [], "failed_in_training": []}
    before = load_file(str(embedded_path() / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)  # the step changed weights
    trained = hico.load(out)  # the official layout with its tokenizer, and it answers
    assert trained.answer(trained.encode_video(corpus[H264_MP4]), QUESTION).strip()
