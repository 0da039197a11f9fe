"""The bad-input corpus: every entry point given broken videos, checkpoints, training data and options.

Each case must end with exit code 2 and exactly one stderr line starting `hico: error:` (never a traceback,
never "internal error"), and leave nothing behind: no new file in the working folder and every input file
unchanged. Most cases run in-process through `hico.cli.main` (fast); a few run the real `hico` process.
The table in docs/reliability.md is this corpus; `test_the_docs_table_is_the_corpus` checks it
(HICO_WRITE_DOCS=1 rewrites it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import hico
import hico.errors
from hico.cli import main
from hico.errors import HicoError
from hico.synthetic import videos as synth
from hico.synthetic.benchmarks import write_benchmark
from hico.synthetic.checkpoints import write_random_checkpoint

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- corpus table: start -->", "<!-- corpus table: end -->"
QUESTION = "<image>\nWhat colour is the video?"


@dataclass(frozen=True)
class Case:
    name: str
    area: str
    command: str  # `hico` arguments; {in} is the inputs folder, {work} an empty folder for outputs
    phrase: str  # a part of the message that says what is wrong
    needs: str = ""  # an exception name the case needs in hico.errors (from another issue)


def _video_cases() -> list[Case]:
    probe = [
        ("missing", "probe {in}/missing.mp4", "no such file"),
        ("permission denied", "probe {in}/locked.mp4", "permission denied"),
        ("zero bytes", "probe {in}/empty.mp4", "empty"),
        ("header only", "probe {in}/header.mp4", "not a media file"),
        ("truncated, index lost", "probe {in}/truncated.mp4", "not a media file"),
        ("random bytes", "probe {in}/random.mp4", "not a media file"),
        ("text file", "probe {in}/notes.txt", "not a media file"),
        ("audio only", "probe {in}/audio.m4a", "no video stream"),
        ("zero duration (no frames)", "probe {in}/no_frames.mp4", "no video stream"),
        ("huge declared size", "probe {in}/huge", "pixels"),
        ("folder without images", "probe {in}/no_images", "no"),
    ]
    cases = [Case(f"video: {name}", "probe", command, phrase) for name, command, phrase in probe]
    cases += [
        Case("video: folder of mixed files", "frames", "frames {in}/mixed --out {work}/frames", "could not be decoded"),
        Case("video: broken frames mid-file", "frames",
             "frames {in}/corrupt.mp4 --out {work}/frames --num-frames 60 --max-replaced 0", "could not be decoded"),
        Case("video: one frame, start past its end", "probe", "probe {in}/one_frame.mp4 --num-frames 4 --start 2",
             "start time 2 s"),
        Case("video: GIF of one frame, 0 frames asked", "probe", "probe {in}/one.gif --num-frames 0", "got 0"),
        Case("video: variable frame rate, end before start", "probe",
             "probe {in}/vfr.mp4 --num-frames 4 --start 1.5 --end 0.5", "must be before end"),
        Case("video: rotated, chat with a broken checkpoint", "chat",
             "chat {in}/rotated.mp4 hello --model {in}/ckpt_bad_json", "not valid JSON"),
        Case("video: missing, through chat", "chat", "chat {in}/missing.mp4 hello --model {in}/tiny", "no such file"),
    ]
    return cases


def _option_cases() -> list[Case]:
    return [
        Case("options: negative fps", "probe", "probe {in}/video.mp4 --fps -1", "got -1"),
        Case("options: start > end", "probe", "probe {in}/video.mp4 --num-frames 4 --start 3 --end 1",
             "must be before end"),
        Case("options: zero frames", "probe", "probe {in}/video.mp4 --num-frames 0", "got 0"),
        Case("options: frames beyond the video", "frames",
             "frames {in}/video.mp4 --out {work}/f --num-frames 4 --start 60", "start time 60 s"),
        Case("options: frames into a non-empty folder", "frames",
             "frames {in}/video.mp4 --out {in}/no_images --num-frames 4", "not an empty folder"),
        Case("options: unknown dropout type", "chat",
             "chat {in}/video.mp4 hello --model {in}/tiny --dropout sideways", "sideways"),
        Case("options: dropout layer beyond the model", "chat",
             "chat {in}/video.mp4 hello --model {in}/tiny --dropout uniform --dropout-layers 9 "
             "--dropout-ratios 1,0.5", "layer"),
        Case("options: dropout model on a checkpoint without a schedule", "chat",
             "chat {in}/video.mp4 hello --model {in}/tiny --dropout model", "sets no in-LLM dropout"),
        Case("options: dropout layers without a dropout type", "chat",
             "chat {in}/video.mp4 hello --model {in}/tiny --dropout-layers 1 --dropout-ratios 1,0.5",
             "need --dropout TYPE"),
        Case("options: dropout ratios that are not numbers", "chat",
             "chat {in}/video.mp4 hello --model {in}/tiny --dropout uniform --dropout-layers 1 "
             "--dropout-ratios 1,half", "kept fractions"),
    ]


def _checkpoint_cases() -> list[Case]:
    chat = "chat {in}/video.mp4 hello --num-frames 4 --model {in}/"
    cases = [
        ("missing folder", "ckpt_missing", "not a folder"),
        ("missing config.json", "ckpt_no_config", "no config.json"),
        ("invalid JSON", "ckpt_bad_json", "not valid JSON"),
        ("missing weights", "ckpt_no_weights", "no model.safetensors"),
        ("missing shard", "ckpt_missing_shard", "shards listed"),
        ("wrong shapes", "ckpt_wrong_shapes", "shape mismatch"),
        ("unknown tower", "ckpt_unknown_tower", "unknown vision tower"),
        ("unknown projector", "ckpt_unknown_projector", "not supported"),
        ("inconsistent dropout lists", "ckpt_bad_dropout", "mm_llm_compress is on"),
        ("missing tokenizer", "ckpt_no_tokenizer", "tokenizer"),
    ]
    result = [Case(f"checkpoint: {name}", "chat", chat + folder, phrase) for name, folder, phrase in cases]
    result += [
        Case("checkpoint: truncated safetensors", "chat", chat + "ckpt_truncated", "model.safetensors",
             needs="CheckpointError"),
        Case("checkpoint: random-bytes safetensors", "chat", chat + "ckpt_random", "model.safetensors",
             needs="CheckpointError"),
        Case("checkpoint: NaN weights", "chat", chat + "ckpt_nan", "non-finite", needs="NonFiniteError"),
    ]
    return result


def _training_cases() -> list[Case]:
    train = "train --stage 2 --model {in}/tiny --output {work}/out --set max_steps=1 --data {in}/"
    cases = [
        ("invalid JSON", "bad.json", "not valid JSON"),
        ("not a list", "object.json", "expected a list"),
        ("wrong <image> count", "two_images.json", "placeholders"),
        ("missing media", "missing_media.json", "unreadable media"),
        ("empty conversations", "empty_conversations.json", "conversations"),
        ("answer longer than max length", "too_long.json --set max_length=64", "no usable training sample"),
        ("missing data file", "absent.json", "no such"),
        ("mixture without datasets", "mixture.yaml", "datasets"),
    ]
    result = [Case(f"training data: {name}", "train", train + data, phrase) for name, data, phrase in cases]
    result += [
        Case("train: unknown stage", "train",
             "train --stage 7 --model {in}/tiny --output {work}/out --data {in}/good.json", "unknown stage"),
        Case("train: unknown setting", "train",
             "train --stage 2 --model {in}/tiny --output {work}/out --data {in}/good.json --set learning_rate=1",
             "unknown training settings"),
        Case("train: output holds a finished run", "train",
             "train --stage 2 --model {in}/tiny --output {in}/tiny --data {in}/good.json", "finished run"),
        Case("train: resume with nothing to resume", "train",
             "train --stage 2 --model {in}/tiny --output {work}/out --data {in}/good.json --resume",
             "no checkpoint to resume from"),
        Case("train: model folder is not a checkpoint", "train",
             "train --stage 2 --model {in}/no_images --output {work}/out --data {in}/good.json", "no config.json"),
        Case("merge-lora: no adapter", "merge-lora", "merge-lora {in}/tiny --out {work}/merged", "holds no LoRA"),
        Case("merge-lora: damaged adapter config", "merge-lora", "merge-lora {in}/lora_bad_config --out {work}/m",
             "not a hico LoRA adapter config"),
        Case("merge-lora: output not empty", "merge-lora", "merge-lora {in}/lora_bad_config --out {in}/mixed",
             "not empty"),
    ]
    return result


def _niah_cases() -> list[Case]:
    build = "niah build --out {work}/bench --haystack {in}/video.mp4 --needles "
    return [
        Case("niah build: missing haystack", "niah build",
             "niah build --out {work}/bench --haystack {in}/missing.mp4 --needles {in}/needles.json --frames 8",
             "no such file"),
        Case("niah build: frames not a multiple of 4", "niah build", build + "{in}/needles.json --frames 10",
             "multiples of 4"),
        Case("niah build: needles not JSON", "niah build", build + "{in}/bad.json --frames 8", "JSON"),
        Case("niah build: needle image missing", "niah build", build + "{in}/needles_missing_image.json --frames 8",
             "gone.png"),
        Case("niah build: haystack too short", "niah build", build + "{in}/needles.json --frames 400", "--loop"),
        Case("niah run: not a benchmark folder", "niah run", "niah run {in}/no_images --model {in}/tiny",
             "not a NIAH benchmark folder"),
        Case("niah run: results of another model", "niah run",
             "niah run {in}/bench --model {in}/tiny --results {in}/other_results.jsonl --no-report", "another model"),
        Case("niah run: damaged results line", "niah run",
             "niah run {in}/bench --model {in}/tiny --results {in}/damaged_results.jsonl --no-report",
             "line 1 is not JSON"),
    ]


def _eval_serve_cases() -> list[Case]:
    ann = "--annotations {in}/evbench/annotations"
    run = f"eval mvbench_action_sequence --out {{work}}/ev {ann} "
    return [
        Case("eval: unknown task", "eval", f"eval no_such_task --video-root {{in}} {ann} --out {{work}}/ev",
             "unknown benchmark task"),
        Case("eval: annotations folder missing", "eval",
             "eval mvbench_action_sequence --out {work}/ev --video-root {in} --annotations {in}/gone",
             "annotation file not found"),
        Case("eval: videos missing", "eval", run + "--video-root {in}/no_images --model {in}/tiny", "missing"),
        Case("eval: video root not a folder", "eval", run + "--video-root {in}/video.mp4", "not a folder"),
        Case("eval: negative limit", "eval", run + "--video-root {in} --limit -1", "--limit must be at least 1"),
        Case("eval: zero frames", "eval", run + "--video-root {in} --frames 0", "got 0"),
        Case("serve: open host without a key", "serve", "serve --host 0.0.0.0 --port 8123", "--api-key"),
        Case("serve: port out of range", "serve", "serve --port 99999", "got 99999"),
        Case("serve: allowed path missing", "serve", "serve --allow-path {in}/gone", "not a folder"),
    ]


CASES = (_video_cases() + _option_cases() + _checkpoint_cases() + _training_cases() + _niah_cases()
         + _eval_serve_cases())
RESULTS: dict[str, tuple[int, str]] = {}  # case name -> (exit code, message), for the docs table


# --- inputs, written once ------------------------------------------------------------------------------------


def _png_with_declared_size(path: Path, width: int, height: int) -> None:
    """A valid PNG header declaring a huge image, with almost no pixel data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _write_videos(root: Path) -> None:
    video = synth.write_video(root / "video.mp4", 80, fps=10, width=64, height=64, bits=8, gop=10)
    data = video.read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "header.mp4").write_bytes(data[:48])
    plain = synth.write_video(root / "plain.mp4", 60, fps=10, width=64, height=64, bits=8, gop=10)
    (root / "truncated.mp4").write_bytes(plain.read_bytes()[: len(plain.read_bytes()) // 2])
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not a video\n" * 20)
    (root / "locked.mp4").write_bytes(data)
    synth.write_audio_only(root / "audio.m4a", seconds=0.3)
    with av.open(str(root / "no_frames.mp4"), "w") as container:  # a video stream that holds no frame
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # the header, then no frame at all
    (root / "huge").mkdir()
    _png_with_declared_size(root / "huge" / "img_1.png", 60000, 60000)
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.txt").write_text("no frames here\n")
    (root / "mixed").mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(root / "mixed" / "img_1.png")
    (root / "mixed" / "img_2.png").write_bytes(b"not a png at all")
    Image.new("RGB", (32, 32), (0, 200, 0)).save(root / "mixed" / "img_3.png")
    corrupt = bytearray(synth.write_video(root / "source.mp4", 120, fps=10, width=64, height=64, bits=8,
                                          gop=30).read_bytes())
    start, end = corrupt.find(b"mdat"), corrupt.find(b"moov")
    middle = (start + end) // 2
    corrupt[middle:middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (root / "corrupt.mp4").write_bytes(bytes(corrupt))
    synth.write_video(root / "one_frame.mp4", 1, fps=10, width=64, height=64, bits=8)
    synth.write_gif(root / "one.gif", 1, width=32, height=32)
    synth.write_video(root / "vfr.mp4", 6, fps=30, width=64, height=64, bits=8,
                      frame_times=(0, 0.1, 0.5, 0.6, 1.5, 2.0))
    synth.write_video(root / "rotated.mp4", 8, fps=10, width=64, height=48, bits=8, rotation=90)


def _write_checkpoints(root: Path) -> None:
    tiny = root / "tiny"
    write_random_checkpoint(tiny, seed=0)
    config = json.loads((tiny / "config.json").read_text())

    def variant(name: str, config_change: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
        folder = root / name
        folder.mkdir()
        for file in tiny.iterdir():
            if file.name not in drop:
                (folder / file.name).write_bytes(file.read_bytes())
        if config_change is not None:
            (folder / "config.json").write_text(json.dumps({**config, **config_change}))
        return folder

    variant("ckpt_no_config", drop=("config.json",))
    (variant("ckpt_bad_json") / "config.json").write_text('{"hidden_size": 64,')
    variant("ckpt_no_weights", drop=("model.safetensors",))
    shard = variant("ckpt_missing_shard", drop=("model.safetensors",))
    (shard / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    variant("ckpt_wrong_shapes", {"intermediate_size": 3 * config["hidden_size"]})
    variant("ckpt_unknown_tower", {"mm_vision_tower": "clip-vit-large"})
    variant("ckpt_unknown_projector", {"mm_projector_type": "qformer"})
    variant("ckpt_bad_dropout", {"mm_llm_compress": True, "llm_compress_type": "uniform",
                                 "llm_compress_layer_list": [1, 2], "llm_image_token_ratio_list": [1.0, 0.5]})
    variant("ckpt_no_tokenizer", drop=tuple(f.name for f in tiny.iterdir() if "token" in f.name or
                                            f.name in ("vocab.json", "merges.txt")))
    weights = (tiny / "model.safetensors").read_bytes()
    (variant("ckpt_truncated") / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (variant("ckpt_random") / "model.safetensors").write_bytes(
        np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    from safetensors.torch import load_file, save_file

    nan = variant("ckpt_nan")
    state = load_file(str(tiny / "model.safetensors"))
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(nan / "model.safetensors"), metadata={"format": "pt"})
    lora = variant("lora_bad_config")
    save_file({"llm.x.lora_A.weight": torch.zeros(2, 2)}, str(lora / "adapter_model.safetensors"))
    (lora / "adapter_config.json").write_text("{not json")


def _write_training_data(root: Path) -> None:
    def record(**extra) -> dict:
        return {"conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": "red"}], **extra}

    (root / "good.json").write_text(json.dumps([record(video="video.mp4")]))
    (root / "bad.json").write_text('[{"conversations": [')
    (root / "object.json").write_text('{"conversations": []}')
    two = record(video="video.mp4")
    two["conversations"][0]["value"] = "<image>\n<image>\nWhat colour?"
    (root / "two_images.json").write_text(json.dumps([two]))
    (root / "missing_media.json").write_text(json.dumps([record(video="gone.mp4"), record(video="lost.mp4")]))
    (root / "empty_conversations.json").write_text(json.dumps([{"video": "video.mp4", "conversations": []}]))
    long = record(video="video.mp4")
    long["conversations"][1]["value"] = " ".join(["red"] * 200)
    (root / "too_long.json").write_text(json.dumps([long]))
    (root / "mixture.yaml").write_text("name: stage3\n")


def _write_niah(root: Path) -> None:
    from hico.niah.build import GridOptions, build
    from hico.niah.records import load_needles

    Image.new("RGB", (32, 32), (255, 0, 255)).save(root / "needle.png")
    question = "What colour is the square?\nOptions: (A) red\n(B) magenta\n(C) blue\n(D) green\nBest option: ("
    (root / "needles.json").write_text(json.dumps([{"question": question, "answer": "B", "image": "needle.png"}]))
    (root / "needles_missing_image.json").write_text(json.dumps([{"question": question, "answer": "B",
                                                                   "image": "gone.png"}]))
    build(root / "bench", root / "video.mp4", load_needles(root / "needles.json"), GridOptions(frames=(8,),
          depths=(0.5,)), progress=False)
    (root / "other_results.jsonl").write_text(json.dumps({"case": "x", "model": "someone-else"}) + "\n")
    (root / "damaged_results.jsonl").write_text('{"case": "x", "mod\n{"case": "y"}\n')


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    _write_videos(root)
    _write_checkpoints(root)
    _write_training_data(root)
    _write_niah(root)
    # an MVBench annotation file in the official layout (ann/MVBench/json/action_sequence.json); its videos are
    # in ann/../videos, so any other --video-root lacks them
    write_benchmark(root / "evbench", "mvbench", items=3, seconds=2)
    return root


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _lock(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission denied, even for root (whom chmod 000 does not stop): the access check says no."""
    from hico.video import metadata
    from hico.video.reader import Video

    defaults = {**Video.__init__.__kwdefaults__, "isolate": False}  # probe here, where the patch applies
    monkeypatch.setattr(Video.__init__, "__kwdefaults__", defaults)
    real_access = os.access
    monkeypatch.setattr(metadata.os, "access",
                        lambda p, m, *a, **k: False if Path(p) == path else real_access(p, m, *a, **k))
    path.chmod(0)


PROGRESS = re.compile(r"^[^|]*: +\d+%\|")  # a tqdm bar (long work shows progress on stderr)


def _check(code: int, out: str, err: str, case: Case) -> str:
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]  # a bar redraws itself after \r
    lines = [line for line in lines if line.strip() and not PROGRESS.match(line)]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("hico: error: "), err[-3000:]
    assert "Traceback" not in err and "internal error" not in err
    assert case.phrase.lower() in lines[0].lower(), (case.phrase, lines[0])
    return lines[0]


def _normalise(text: str, inputs: Path, work: Path) -> str:
    text = text.replace(str(inputs), "IN").replace(str(work), "WORK")
    return re.sub(r"\b[0-9a-f]{12,}\b", "<hash>", text)


def _needs(name: str) -> list:
    """Cases for error types that issue 16 adds to hico.errors: expected to fail until they exist."""
    return [pytest.mark.xfail(bool(name) and not hasattr(hico.errors, name), strict=True, reason="needs issue 16")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_needs(c.needs)) for c in CASES])
def test_bad_input(case: Case, inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    if "locked.mp4" in case.command:
        _lock(inputs / "locked.mp4", monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(inputs)
    argv = shlex.split(case.command.format(**{"in": inputs, "work": work}))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    finally:
        (inputs / "locked.mp4").chmod(0o644)
    out, err = capsys.readouterr()
    line = _check(code, out, err, case)
    assert list(work.iterdir()) == [], "partial output left behind"
    assert _snapshot(inputs) == before, "an input changed"
    RESULTS[case.name] = (code, _normalise(line, inputs, work))


@pytest.mark.parametrize("case", ["probe random bytes", "chat bad checkpoint", "train bad data"])
def test_bad_input_through_the_real_command(case: str, inputs: Path, tmp_path: Path) -> None:
    """The same contract from a real process: exit status, one stderr line, nothing on stdout."""
    argv = {"probe random bytes": ["probe", str(inputs / "random.mp4")],
            "chat bad checkpoint": ["chat", str(inputs / "video.mp4"), "hi", "--model", str(inputs / "ckpt_bad_json")],
            "train bad data": ["train", "--stage", "2", "--model", str(inputs / "tiny"), "--output",
                               str(tmp_path / "out"), "--data", str(inputs / "bad.json")]}[case]
    result = subprocess.run([sys.executable, "-m", "hico.cli", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hico: error: "), result.stderr
    assert not (tmp_path / "out").exists()


# --- the Python API ------------------------------------------------------------------------------------------


def _api_cases():
    from hico.memory import MemoryFileError, VideoMemory
    from hico.video import SamplingOptions, Video

    def model(inputs):
        return hico.load(inputs / "tiny")

    def chat(folder):
        return lambda i: hico.load(i / folder).chat(i / "video.mp4", "hello", SamplingOptions.plain(num_frames=4))

    return {
        "load: truncated safetensors (CheckpointError)": lambda i: hico.load(i / "ckpt_truncated"),
        "load: random-bytes safetensors (CheckpointError)": lambda i: hico.load(i / "ckpt_random"),
        "chat: NaN weights (NonFiniteError)": chat("ckpt_nan"),
        "load: missing folder": lambda i: hico.load(i / "ckpt_missing"),
        "load: invalid config JSON": lambda i: hico.load(i / "ckpt_bad_json"),
        "load: wrong shapes": lambda i: hico.load(i / "ckpt_wrong_shapes"),
        "encode_video: missing video": lambda i: model(i).encode_video(i / "missing.mp4"),
        "encode_video: random bytes": lambda i: model(i).encode_video(i / "random.mp4"),
        "answer: empty question": lambda i: model(i).answer(
            model(i).encode_video(i / "video.mp4", SamplingOptions.plain(num_frames=4)), " "),
        "VideoMemory.load: not a memory file": lambda i: VideoMemory.load(i / "random.mp4"),
        "Video: zero frames asked": lambda i: Video(i / "video.mp4").plan(SamplingOptions.plain(num_frames=0)),
        "SamplingOptions: negative fps": lambda i: SamplingOptions.plain(fps=-1.0),
    }, MemoryFileError


API_CASES = list(_api_cases()[0])


def _api_param(name: str):
    typed = re.search(r"\((\w+Error)\)$", name)
    return pytest.param(name, id=name, marks=_needs(typed.group(1) if typed else ""))


@pytest.mark.parametrize("name", [_api_param(name) for name in API_CASES])
def test_bad_input_through_the_api(name: str, inputs: Path) -> None:
    calls, _ = _api_cases()
    typed = re.search(r"\((\w+Error)\)$", name)
    expected = getattr(hico.errors, typed.group(1)) if typed else HicoError
    with pytest.raises(expected) as caught:
        calls[name](inputs)
    assert "\n" not in str(caught.value) and str(caught.value)


def test_the_docs_table_is_the_corpus() -> None:
    """The table in docs/reliability.md lists every case with its command, message and exit code."""
    ran = [c for c in CASES if c.name in RESULTS]
    if len(ran) != len([c for c in CASES if not c.needs or hasattr(hico.errors, c.needs)]):
        pytest.skip("the corpus did not run in full in this session (-k); the table is checked when it does")
    rows = ["| case | command | message | exit |", "|---|---|---|---|"]
    for case in CASES:
        code, message = RESULTS.get(case.name, (2, f"(expected failure: needs issue 16, hico.errors.{case.needs})"))
        command = "hico " + case.command.replace("{in}", "IN").replace("{work}", "WORK")
        rows.append(f"| {case.name} | `{command}` | {message.replace('|', '/')} | {code} |")
    table = "\n".join(rows)
    text = DOCS.read_text() if DOCS.exists() else f"{TABLE_START}\n{TABLE_END}\n"
    before, rest = text.split(TABLE_START)
    _, after = rest.split(TABLE_END)
    wanted = f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}"
    if os.environ.get("HICO_WRITE_DOCS"):
        DOCS.write_text(wanted)
    assert text == wanted, "docs/reliability.md's corpus table is out of date; rerun with HICO_WRITE_DOCS=1"
    assert len(CASES) + len(API_CASES) >= 40
