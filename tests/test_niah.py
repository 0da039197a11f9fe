"""NIAH end to end on small grids: needle placement (hand-computed), splicing, video files whose frames are
checked by their frame codes, a resumable run with a tiny random model, scoring and the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import hico
from hico.compress import DropSchedule
from hico.synthetic import videos
from hico.errors import HicoError, OptionError
from hico.niah.build import GridOptions, build, insert_offsets, load_benchmark, needle_positions, plan_cases
from hico.niah.records import load_needles
from hico.niah.report import report, summarize
from hico.niah.run import (OPEN_MAX_TOKENS, RunOptions, ask, ask_open, normalize_answer, open_question, read_results,
                           run, splice)
from hico.prompt import niah_prompt, tokenize
from hico.synthetic.checkpoints import write_random_checkpoint
from hico.video.preprocess import preprocess
from hico.video.sampling import SamplingOptions

SHARED = Path(os.environ.get("HICO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL = SHARED / "reference" / "niah"
BITS = 12
HAY_FRAMES, HAY_FPS = 80, 2.0  # 40 haystack frames at 1 fps: every 2nd video frame
MAGENTA = (255, 0, 255)
QUESTION = "Find the frame of a square. What colour is it?\nOptions: (A) red\n(B) magenta\n(C) blue\n(D) green\n" \
           "Only give the best option. Best option: ("


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("niah")
    videos.write_video(root / "hay.mp4", HAY_FRAMES, fps=HAY_FPS, width=128, height=128, bits=BITS)
    (root / "single").mkdir()
    (root / "multi").mkdir()
    Image.new("RGB", (96, 64), MAGENTA).save(root / "single" / "magenta.png")
    colours = [(0, 200, 255), (255, 255, 0), (0, 0, 0)]
    for k, colour in enumerate(colours):
        Image.new("RGB", (64, 64), colour).save(root / "multi" / f"hop{k}.png")
    (root / "single.json").write_text(json.dumps([{"question": QUESTION, "answer": "B", "image": "single/magenta.png",
                                                   "id": 7}]))
    (root / "multi.json").write_text(json.dumps([{"images": [f"multi/hop{k}.png" for k in range(3)],
                                                  "question1": "q1 Best option: (", "answer1": "A",
                                                  "question2": "q2 Best option: (", "answer2": "C"}]))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> hico.Hico:
    folder = tmp_path_factory.mktemp("niah-model") / "tiny"
    write_random_checkpoint(folder, seed=3)
    return hico.load(folder)


def _needles(data: Path):
    return load_needles(data / "single.json") + load_needles(data / "multi.json")


def test_needle_offsets_by_hand() -> None:
    assert insert_offsets("single", 100, 0.5, 1) == [48]  # int(50) rounded down to a clip boundary
    assert insert_offsets("single", 100, 0.0, 1) == [0]
    assert insert_offsets("single", 100, 1.0, 1) == [100]  # after the whole haystack
    assert insert_offsets("single", 12, 0.33, 1) == [0]  # int(3.96) = 3 -> 0
    assert insert_offsets("multi", 100, 0.0, 5) == [0, 24, 48, 72, 100]  # segments of 100 // 4 = 25 -> 24
    assert needle_positions([0, 24, 48, 72, 100]) == [0, 28, 56, 84, 116]


def test_splice_inserts_needle_tokens_at_clip_boundaries() -> None:
    haystack = torch.arange(32 * 16, dtype=torch.float32)[:, None]  # 32 frames, token value = token index
    needle = torch.full((64, 1), -1.0)
    out = splice(haystack, [needle], [8], 16)
    assert out.shape == ((16 + 4) * 16, 1)
    assert torch.equal(out[:128, 0], torch.arange(128.0))
    assert torch.equal(out[128:192], needle)
    assert torch.equal(out[192:, 0], torch.arange(128.0, 256.0))
    looped = splice(haystack[:8 * 16], [needle, needle], [0, 12], 12)  # 8 distinct frames, 12 asked
    assert torch.equal(looped[64:64 + 128, 0], torch.arange(128.0))
    assert torch.equal(looped[192:256, 0], torch.arange(64.0))  # frames 8-11 repeat frames 0-3
    assert torch.equal(looped[256:], needle)


def test_records_are_validated(tmp_path, data) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question": "q", "answer": "E", "image": "single/magenta.png"}]))
    with pytest.raises(OptionError, match="record 0.*not one of the option letters"):
        load_needles(bad, data)
    bad.write_text(json.dumps([{"question": "q", "image": "x.png"}]))
    with pytest.raises(OptionError, match="lacks answer"):
        load_needles(bad, data)
    bad.write_text(json.dumps([{"question": "q", "answer": "A", "image": "single/none.png"}]))
    with pytest.raises(OptionError, match="1 needle images are missing"):
        load_needles(bad, data)
    needles = _needles(data)
    assert [n.kind for n in needles] == ["single", "multi"]
    assert needles[1].answers == ("A", "C") and len(needles[1].images) == 3


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"official annotation files missing: {OFFICIAL}")
def test_official_annotation_files_load_as_they_are(tmp_path) -> None:
    single_file, multi_file = OFFICIAL / "niah-coco-singlehop_20.json", OFFICIAL / "niah-coco-multihop-100.json"
    with pytest.raises(OptionError, match="20 needle images are missing"):
        load_needles(single_file, tmp_path)
    raw = json.loads(single_file.read_text()) + json.loads(multi_file.read_text())
    for image in {p for r in raw for p in r.get("images", [r.get("image")])}:
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / image, format="JPEG")
    single, multi = load_needles(single_file, tmp_path), load_needles(multi_file, tmp_path)
    assert len(single) == 20 and len(multi) == 100
    assert [n.answers[0] for n in single] == [r["answer"] for r in raw[:20]]
    assert sorted(len(n.images) for n in multi) == [5] * 31 + [6] * 28 + [7] * 41
    assert multi[0].images[0] == str(tmp_path / raw[20]["images"][0])  # list order is insertion order
    cases = plan_cases(single + multi, GridOptions(frames=(1000, 10000)))
    assert len(cases) == 2 * (20 * 6 + 100)
    seven = next(c for c in cases if c["kind"] == "multi" and len(c["images"]) == 7 and c["frames"] == 1000)
    assert seven["offsets"] == [0, 164, 328, 492, 656, 820, 1000]  # 1000 // 6 = 166 -> 164, whole clips


def _codes(path: Path) -> list[int | None]:
    """Frame code of every frame of a video, None for a frame that shows a needle (a flat colour)."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [None if f.reshape(-1, 3).std(axis=0).max() < 12 else videos.read_frame_code(f, BITS) for f in frames]


def test_video_mode_puts_the_needle_at_the_expected_frame(tmp_path, data, model) -> None:
    grid = GridOptions(frames=(16, 32), depths=(0.0, 0.5, 1.0), mode="video", video_size=128)
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data), grid, progress=False)
    settings, cases = load_benchmark(folder)
    assert settings["haystack"]["step"] == 2 and settings["haystack"]["unique_frames"] == 40
    assert len(cases) == 2 * 3 + 2
    for case in cases:
        codes = _codes(folder / case["video"])
        assert len(codes) == case["total_frames"]
        needle = set()
        for start in case["needle_frames"]:
            needle.update(range(start, start + 4))
        assert {i for i, c in enumerate(codes) if c is None} == needle, case["case"]
        assert [c for c in codes if c is not None] == [2 * i for i in range(case["frames"])]
    at_half = next(c for c in cases if c["case"] == "single-f00032-d0.50-n7")
    assert at_half["needle_frames"] == [16]
    first = np.asarray(_frame(folder / at_half["video"], 16), dtype=float)
    assert np.abs(first.mean(axis=(0, 1)) - MAGENTA).max() < 8
    results = run(folder, model, options=RunOptions(limit=2, progress=False))
    for record, case in zip(read_results(results), cases):
        assert record["case"] == case["case"] and record["visual_tokens"] == 16 * case["total_frames"]


def _frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no frame {index}")


def test_short_haystack_fails_unless_looped(tmp_path, data) -> None:
    with pytest.raises(OptionError, match="only 40 frames.*--loop"):
        build(tmp_path / "a", data / "hay.mp4", _needles(data), GridOptions(frames=(48,)), progress=False)
    assert not (tmp_path / "a").exists()
    grid = GridOptions(frames=(48,), depths=(1.0,), mode="video", loop=True, video_size=128)
    folder = build(tmp_path / "b", data / "hay.mp4", _needles(data)[:1], grid, progress=False)
    settings, (case,) = load_benchmark(folder)
    assert settings["haystack"]["looped"]
    codes = _codes(folder / case["video"])
    assert codes[:48] == [2 * (i % 40) for i in range(48)] and codes[48:] == [None] * 4
    with pytest.raises(OptionError, match="not an empty folder"):
        build(folder, data / "hay.mp4", _needles(data), grid, progress=False)


@pytest.mark.parametrize("bad", [dict(frames=(10,)), dict(frames=(8,), depths=(1.5,)), dict(frames=(8,), mode="x"),
                                 dict(frames=(8,), haystack_fps=0.0)])
def test_grid_options_are_checked(bad) -> None:
    with pytest.raises(OptionError):
        GridOptions(**bad)


def test_scoring_is_the_official_normalisation() -> None:
    assert normalize_answer("(A)") == "a" and normalize_answer("B") == "b"
    assert normalize_answer(" A") != "a"  # exact match: another token is another answer


def test_ask_is_the_argmax_of_the_stock_forward(model) -> None:
    visual = torch.randn(3 * 64, model.model.config.hidden_size)
    ids = tokenize(niah_prompt(QUESTION), model.tokenizer)
    embeds, _ = model.model.embed(ids, visual)
    with torch.no_grad():
        logits = model.model.llm(inputs_embeds=embeds).logits[0, -1]
    expected = model.tokenizer.decode([int(logits.argmax())])
    from hico.compress import DropSchedule

    assert ask(model, visual, QUESTION, "B", DropSchedule()) == expected


def test_embedding_run_is_resumable_and_reports(tmp_path, data, model) -> None:
    grid = GridOptions(frames=(16, 32), depths=(0.0, 1.0))
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data), grid, progress=False)
    _, cases = load_benchmark(folder)
    results = run(folder, model, options=RunOptions(limit=2, progress=False))
    assert [r["case"] for r in read_results(results)] == [c["case"] for c in cases[:2]]
    with open(results, "a") as handle:
        handle.write('{"case": "cut off mid-wri')  # an interrupted run leaves half a line
    run(folder, model, results, RunOptions(progress=False))
    done = read_results(results)
    assert [r["case"] for r in done] == [c["case"] for c in cases]
    for record, case in zip(done, cases):
        assert record["visual_tokens"] == 16 * case["total_frames"]
        assert record["correct"] == [normalize_answer(p) == a.lower()
                                     for p, a in zip(record["predictions"], case["answers"])]
        assert record["peak_rss_mb"] > 0 and record["seconds"] >= 0
    (cached,) = (folder / "cache").iterdir()
    haystack = hico.memory.VideoMemory.load(cached)
    assert haystack.indices == [2 * i for i in range(32)]
    with av.open(str(data / "hay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    size = model.model.config.vision.image_size
    first_clip = preprocess([frames[i] for i in (0, 2, 4, 6)], size)
    assert torch.allclose(haystack.tokens[:64], model.model.encode_clips(first_clip[None])[0], atol=1e-5)
    paths = report(folder, results)
    assert {p.name for p in paths} == {"niah-single.png", "niah-multi.png", "niah-report.md"}
    assert Image.open(folder / "niah-single.png").size[1] > 100
    text = (folder / "niah-report.md").read_text()
    assert "| depth | 16 | 32 |" in text and "Average accuracy" in text and "tiny" in text
    run(folder, model, results, RunOptions(progress=False))  # nothing left to do
    assert len(read_results(results)) == len(cases)
    with pytest.raises(OptionError, match="another model"):
        other = hico.api.Hico(model.model, model.tokenizer, "someone-else")
        run(folder, other, results, RunOptions(progress=False))


def test_needle_tokens_land_at_the_needle_frames(tmp_path, data, model) -> None:
    grid = GridOptions(frames=(16,), depths=(0.5,))
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data)[:1], grid, progress=False)
    run(folder, model, options=RunOptions(progress=False))
    (cached,) = (folder / "cache").iterdir()
    haystack = hico.memory.VideoMemory.load(cached).tokens
    needle = model.encode_images([np.asarray(Image.open(data / "single" / "magenta.png"))])[0]
    tokens = splice(haystack, [needle], [8], 16)
    assert torch.equal(tokens[8 * 16:12 * 16], needle) and torch.equal(tokens[:128], haystack[:128])
    assert torch.equal(tokens[12 * 16:], haystack[128:256])


def test_summary_of_multi_hop_by_hand() -> None:
    cases = [{"case": f"m{i}"} for i in range(4)]
    rows = [[True, True], [True, False], [False, True], [False, False]]
    results = [{"case": f"m{i}", "kind": "multi", "frames": 8, "depth": None, "correct": r, "seconds": 1.0,
                "peak_rss_mb": 10.0, "visual_tokens": 5, "model": "m", "dropout": "off"} for i, r in enumerate(rows)]
    multi = summarize(cases, results)["multi"][8]
    assert multi == {"samples": 4, "both": 1, "caption_only": 1, "qa_only": 1, "both_wrong": 1, "score": 0.5}


def test_cli_errors_are_one_line(tmp_path, data) -> None:
    def hico_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hico.cli", *args], capture_output=True, text=True)

    result = hico_cli("niah", "build", "--haystack", str(data / "hay.mp4"), "--needles", str(data / "single.json"),
                      "--out", str(tmp_path / "x"), "--frames", "10")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "multiples of 4" in result.stderr
    result = hico_cli("niah", "report", str(tmp_path))
    assert result.returncode == 2 and "not a NIAH benchmark folder" in result.stderr


@pytest.mark.slow
def test_ten_thousand_frames_through_the_cli(tmp_path) -> None:
    """The documented 10,000-frame case on a CPU, every step through the `hico` command (about 3 minutes)."""
    from hico.synthetic.checkpoints import tiny_official_config

    videos.write_video(tmp_path / "hay.mp4", 10_000, fps=1.0, width=128, height=128, gop=250)
    dropout = {"mm_llm_compress": True, "llm_compress_type": "uniform0_attention", "llm_compress_layer_list": [1, 2],
               "llm_image_token_ratio_list": [1.0, 0.5, 0.25]}
    write_random_checkpoint(tmp_path / "tiny", tiny_official_config(dropout=dropout), seed=0)
    steps = [["needles", "--out", str(tmp_path / "needles"), "--single", "1", "--multi", "0", "--size", "64"],
             ["build", "--haystack", str(tmp_path / "hay.mp4"), "--needles",
              str(tmp_path / "needles" / "niah-synthetic-singlehop.json"), "--out", str(tmp_path / "bench"),
              "--frames", "10000", "--depths", "0.5"],
             ["run", str(tmp_path / "bench"), "--model", str(tmp_path / "tiny"), "--dropout", "model"]]
    for step in steps:
        result = subprocess.run([sys.executable, "-m", "hico.cli", "niah", *step], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    (results,) = (tmp_path / "bench").glob("results-*.jsonl")
    (record,) = read_results(results)
    assert record["frames"] == 10_000 and record["visual_tokens"] == 16 * 10_004
    assert "| depth | 10000 |" in (tmp_path / "bench" / "niah-report.md").read_text()


def test_open_question_strips_the_options_and_names_the_right_text() -> None:
    assert open_question(QUESTION, "B") == ("Find the frame of a square. What colour is it?", "magenta")
    assert open_question(QUESTION, "D")[1] == "green"
    with pytest.raises(HicoError, match=r"no option \(E\)"):
        open_question(QUESTION, "E")
    with pytest.raises(HicoError, match="Options:"):
        open_question("q1 Best option: (", "A")


def test_open_answer_is_the_greedy_continuation_of_the_stock_forward(model) -> None:
    visual = torch.randn(2 * 64, model.model.config.hidden_size)
    stem = open_question(QUESTION, "B")[0]
    ids = tokenize(niah_prompt(stem), model.tokenizer)
    embeds, _ = model.model.embed(ids, visual)
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(OPEN_MAX_TOKENS):
            token = int(model.model.llm(inputs_embeds=embeds).logits[0, -1].argmax())
            if token in model.stop_ids():
                break
            tokens.append(token)
            embeds = torch.cat([embeds, model.model.llm.model.embed_tokens(torch.tensor([[token]]))], 1)
    from hico.compress import DropSchedule

    assert ask_open(model, visual, stem, DropSchedule()) == model.tokenizer.decode(tokens, skip_special_tokens=True)


def test_open_answer_run_scores_the_option_text(tmp_path, data, model) -> None:
    folder = build(tmp_path / "bench", data / "hay.mp4", load_needles(data / "single.json"),
                   GridOptions(frames=(8,), depths=(0.0, 1.0)), progress=False)
    results = run(folder, model, options=RunOptions(answer="open", progress=False))
    assert results.name.endswith("-open.jsonl")
    done = read_results(results)
    assert len(done) == 2
    for record in done:
        assert record["answer_mode"] == "open" and record["answers"] == ["magenta"]
        assert record["correct"] == [record["predictions"][0].strip().lower() == "magenta"]
    with pytest.raises(OptionError, match="open-answer results"):
        run(folder, model, results, RunOptions(answer="letter", progress=False))
    with pytest.raises(OptionError, match="answer mode"):
        RunOptions(answer="essay")


NIAH_INTERRUPTER = """
import os, signal, sys
from hico import cli
from hico.niah import run as niah_run

how, at = sys.argv[1], int(sys.argv[2])
count = [0]
# Ctrl-C as a terminal gives it: a process started from a background job (`make test &`, nohup) inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler: the test's SIGINT would be lost
signal.signal(signal.SIGINT, signal.default_int_handler)
if how == "sigint":  # hold the run in the middle of answering a case until the test sends Ctrl-C (SIGINT)
    import time
    from pathlib import Path

    original_ask = niah_run.ask

    def ask(*args, **kwargs):
        count[0] += 1
        if count[0] == at:
            Path(sys.argv[-1]).touch()
            time.sleep(300)
        return original_ask(*args, **kwargs)

    niah_run.ask = ask
else:  # SIGKILL with half a result line on disk (the worst a killed writer can leave)
    original_append = niah_run.append_line

    def append_line(path, line):
        count[0] += 1
        if count[0] == at:
            with open(path, "ab") as handle:
                handle.write(line[: len(line) // 2].encode())
            os.kill(os.getpid(), signal.SIGKILL)
        original_append(path, line)

    niah_run.append_line = append_line
sys.exit(cli.main(sys.argv[3:-1] if how == "sigint" else sys.argv[3:]))
"""


def test_interrupted_runs_resume_every_case_exactly_once(tmp_path, data) -> None:
    """`hico niah run` stopped by SIGINT, then by SIGKILL in the middle of a write, then run again: the results
    file is valid JSONL throughout and ends with every case once, as an uninterrupted run answers them."""
    write_random_checkpoint(tmp_path / "tiny", seed=3)
    grid = GridOptions(frames=(16, 32), depths=(0.0, 0.5, 1.0))
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data), grid, progress=False)
    _, cases = load_benchmark(folder)
    results = tmp_path / "results.jsonl"
    command = ["niah", "run", str(folder), "--model", str(tmp_path / "tiny"), "--results", str(results),
               "--no-report"]

    def lines() -> list[dict]:
        text = results.read_text()
        return [json.loads(line) for line in text.splitlines()]  # strict: every line must be a whole record

    waiting = tmp_path / "answering"
    process = subprocess.Popen([sys.executable, "-c", NIAH_INTERRUPTER, "sigint", "3", *command, str(waiting)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + 300
    while not waiting.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # SIGABRT makes faulthandler print every thread's stack: where it hangs
        process.send_signal(signal.SIGABRT)
        _, stderr = process.communicate(timeout=60)
        raise AssertionError(f"hico niah run did not stop on SIGINT within 120 s; its threads:\n{stderr[-8000:]}")
    assert process.returncode == 130 and stderr.strip().endswith("hico: interrupted"), stderr[-2000:]
    assert [r["case"] for r in lines()] == [c["case"] for c in cases[:2]]  # two answered, the third not written
    killed = subprocess.run([sys.executable, "-c", NIAH_INTERRUPTER, "sigkill", "3", *command],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and not results.read_text().endswith("\n")  # half a line left behind
    rerun = subprocess.run([sys.executable, "-m", "hico.cli", *command], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = lines()
    assert [r["case"] for r in done] == [c["case"] for c in cases]  # each exactly once, in order
    whole = run(folder, hico.load(tmp_path / "tiny"), tmp_path / "whole.jsonl", RunOptions(progress=False))
    assert [r["predictions"] for r in done] == [r["predictions"] for r in read_results(whole)]


def test_video_mode_run_decodes_every_case_video_in_one_worker_process(tmp_path, data, model, monkeypatch) -> None:
    """A decode worker process is started once for a whole run, not once per case video."""
    import hico.video.worker as worker

    grid = GridOptions(frames=(8, 16), depths=(0.0, 1.0), mode="video", video_size=64)
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data), grid, progress=False)
    _, cases = load_benchmark(folder)
    started = []
    popen = subprocess.Popen

    def counting(args, *rest, **kwargs):
        if "hico.video.worker" in args:
            started.append(args)
        return popen(args, *rest, **kwargs)

    monkeypatch.setattr(worker.subprocess, "Popen", counting)
    results = run(folder, model, options=RunOptions(progress=False))
    done = read_results(results)
    assert len(cases) == 6 and [r["case"] for r in done] == [c["case"] for c in cases]
    assert [r["visual_tokens"] for r in done] == [16 * c["total_frames"] for c in cases]
    assert len(started) == 1
    # the tokens the run answered about are the case video's own (every frame sampled, as `encode_video` does)
    case = cases[0]
    tokens = model.encode_video(folder / case["video"], SamplingOptions.plain(num_frames=case["total_frames"]))
    assert done[0]["predictions"] == [ask(model, tokens.tokens, q, a, DropSchedule())
                                      for q, a in zip(case["questions"], case["answers"])]


def _dropout_model(folder: Path) -> hico.Hico:
    from hico.synthetic.checkpoints import tiny_official_config

    dropout = {"mm_llm_compress": True, "llm_compress_type": "uniform0_attention", "llm_compress_layer_list": [1, 2],
               "llm_image_token_ratio_list": [1.0, 0.5, 0.25]}
    write_random_checkpoint(folder, tiny_official_config(dropout=dropout), seed=6)  # where the 3 schedules differ
    return hico.load(folder)


def _prefilled_prediction(model: hico.Hico, folder: Path, case: dict, question: str,
                          schedule: DropSchedule) -> str:
    """The official scoring of a one-token answer computed without the engine: the case's tokens spliced from
    the cached haystack, one full prefill with the schedule, the arg-max of the last position."""
    (cached,) = (folder / "cache").glob("haystack-*.safetensors")
    haystack = hico.memory.VideoMemory.load(cached).tokens
    needles = [model.encode_images([np.asarray(Image.open(p).convert("RGB"))])[0] for p in case["images"]]
    visual = splice(haystack, needles, case["offsets"], case["frames"])
    embeds, span = model.model.embed(tokenize(niah_prompt(question), model.tokenizer), visual)
    with torch.no_grad():
        logits = model.model.prefill(embeds, span, schedule).logits[0, -1]
    return model.tokenizer.decode([int(logits.argmax())])


def test_dropout_words_and_schedules(tmp_path, data, model) -> None:
    """--dropout off/model/default and a custom schedule: the schedule each one stands for is the one the answers
    are computed with, and results say "off", "model" or the schedule as the command line spells it."""
    def bench(name: str) -> Path:  # one per model: _prefilled_prediction reads the one cached haystack
        return build(tmp_path / name, data / "hay.mp4", _needles(data)[:1], GridOptions(frames=(8,), depths=(0.5,)),
                     progress=False)

    folder = bench("plain")
    with pytest.raises(OptionError, match="unknown dropout 'sometimes'"):
        RunOptions(dropout="sometimes")
    with pytest.raises(OptionError, match="sets no in-LLM dropout"):  # the checkpoint has no llm_compress_* schedule
        run(folder, model, tmp_path / "none.jsonl", RunOptions(dropout="model", progress=False))
    (record,) = read_results(run(folder, model, tmp_path / "default.jsonl", RunOptions(dropout="default",
                                                                                        progress=False)))
    assert record["dropout"] == "off"  # this checkpoint's inference setting is no dropout

    dropping, folder = _dropout_model(tmp_path / "dropping"), bench("dropping-bench")
    (case,) = load_benchmark(folder)[1]
    configured = DropSchedule("uniform0_attention", (1, 2), (1.0, 0.5, 0.25))
    custom = DropSchedule.parse("uniform", "1", "1,0.25")
    expected = {"off": ("off", DropSchedule()), "model": ("model", configured), "default": ("model", configured),
                custom: ("uniform --dropout-layers 1 --dropout-ratios 1,0.25", custom)}
    predicted = set()
    for setting, (label, schedule) in expected.items():
        name = setting if isinstance(setting, str) else "custom"
        (record,) = read_results(run(folder, dropping, tmp_path / f"dropping-{name}.jsonl",
                                     RunOptions(dropout=setting, progress=False)))
        assert record["dropout"] == label
        assert record["predictions"] == [_prefilled_prediction(dropping, folder, case, case["questions"][0],
                                                               schedule)], name
        predicted.add(record["predictions"][0])
    assert len(predicted) == 3  # each schedule answers differently here: a schedule left out would show
    with pytest.raises(OptionError, match="deeper than"):
        run(folder, dropping, tmp_path / "deep.jsonl", RunOptions(dropout=DropSchedule("uniform", (9,), (1.0, 0.5)),
                                                                  progress=False))


def test_cli_dropout_takes_a_schedule(tmp_path, data) -> None:
    write_random_checkpoint(tmp_path / "tiny", seed=3)
    folder = build(tmp_path / "bench", data / "hay.mp4", _needles(data)[:1], GridOptions(frames=(8,), depths=(0.0,)),
                   progress=False)
    command = [sys.executable, "-m", "hico.cli", "niah", "run", str(folder), "--model", str(tmp_path / "tiny"),
               "--no-report", "--results"]
    bad = subprocess.run([*command, str(tmp_path / "bad.jsonl"), "--dropout", "off", "--dropout-layers", "1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "takes no layers" in bad.stderr
    done = subprocess.run([*command, str(tmp_path / "r.jsonl"), "--dropout", "attention", "--dropout-layers", "2",
                           "--dropout-ratios", "1,0.5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = read_results(tmp_path / "r.jsonl")
    assert record["dropout"] == "attention --dropout-layers 2 --dropout-ratios 1,0.5"
