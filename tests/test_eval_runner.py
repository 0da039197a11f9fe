"""hico.eval.runner end to end: mini benchmarks in every official format over synthetic videos, answered by
the embedded model; resume, missing videos, one encode per video, prefetch bounds, the --cache second run
that decodes nothing, dropout words, torchrun sharding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hico
from hico.embedded import embedded_path
from hico.eval import get_task
from hico.dropout import DropSchedule
from hico.errors import HicoError, OptionError
from hico.eval.runner import RESULTS, EvalOptions, MissingVideosError, finished, prepare, prompt_hash, run
from hico.store import PREFETCH_NICE, VideoStore
from hico.synthetic.benchmarks import FORMATS, write_benchmark

# 8 frames (2 clips) per video, decoded in this process; test_every_format_end_to_end[mvbench], the
# worker-reuse test and the torchrun test decode in worker processes (the default).
FRAMES = EvalOptions(max_frames=8, progress=False, isolate=False)


@pytest.fixture(scope="module")
def model():
    return hico.load(embedded_path())


@pytest.fixture
def counted(model, monkeypatch):
    """The model, with a count of tower calls (one per video of up to 8 clips)."""
    calls = []
    original = model.model.encode_clips
    monkeypatch.setattr(model.model, "encode_clips", lambda clips: calls.append(len(clips)) or original(clips))
    return model, calls


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_end_to_end(tmp_path, counted, fmt):
    model, calls = counted
    bench = write_benchmark(tmp_path, fmt, items=6)
    options = EvalOptions(max_frames=8, progress=False) if fmt == "mvbench" else FRAMES
    plan = prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", options)
    summary = run(plan, model)
    task = get_task(bench.task)
    items = task.load(bench.annotations)
    results = lines(tmp_path / "out" / RESULTS)
    assert [r["id"] for r in results] == [item.id for item in items]
    assert len(calls) == len(bench.video_files)  # videos shared by several questions are encoded once
    for item, result in zip(items, results):
        assert result["status"] == "ok" and result["frames"] == 8
        assert result["prompt_sha"] == prompt_hash(item.prompt)
        assert result["score"]["official"] == task.score(item, result["response"], "official")
        assert result["score"]["strict"] == task.score(item, result["response"], "strict")
        assert result["seconds"] > 0 and result["peak_memory_mb"] > 0
    entry = summary["tasks"][bench.task]
    assert (entry["items"], entry["scored"], entry["skipped"]) == (6, 6, 0)
    assert entry["official"] == task.aggregate([r["score"]["official"] for r in results], "official")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tasks"] == summary["tasks"]
    assert f"| {bench.task} | 6 | 6 | 0 |" in (tmp_path / "out" / "report.md").read_text()


def test_resume_after_an_interruption_gives_the_same_summary(tmp_path, counted):
    model, calls = counted
    bench = write_benchmark(tmp_path, "mlvu", items=8)
    whole = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "a", FRAMES), model)
    (tmp_path / "b").mkdir()
    kept = (tmp_path / "a" / RESULTS).read_text().splitlines(keepends=True)[:3]
    (tmp_path / "b" / RESULTS).write_text("".join(kept) + '{"id": "mlvu_mc_count/3", "tas')  # killed mid-line
    calls.clear()
    again = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "b", FRAMES), model)
    assert again["tasks"] == whole["tasks"]
    assert len(calls) == 3  # items 3..7 live on videos 1..3: only those were encoded again
    assert [r["response"] for r in lines(tmp_path / "b" / RESULTS)] == \
        [r["response"] for r in lines(tmp_path / "a" / RESULTS)]
    calls.clear()
    run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "b", FRAMES), model)
    assert calls == [] and len(lines(tmp_path / "b" / RESULTS)) == 8  # nothing left to do


def test_missing_videos_stop_before_model_work_unless_skipped(tmp_path, counted):
    model, calls = counted
    bench = write_benchmark(tmp_path, "mvbench", items=7)
    for path in bench.video_files[:6]:
        path.unlink()
    with pytest.raises(MissingVideosError) as error:
        prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", FRAMES)
    message = str(error.value)
    assert message.startswith("6 of 7 items have a missing or unreadable video")
    assert all(str(p) in message for p in bench.video_files[:5]) and str(bench.video_files[5]) not in message
    assert not (tmp_path / "out").exists()
    options = EvalOptions(max_frames=8, progress=False, isolate=False, skip_missing=True)
    summary = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", options), model)
    entry = summary["tasks"][bench.task]
    assert (entry["items"], entry["scored"], entry["skipped"]) == (7, 1, 6)
    assert entry["official"]["count"] == 1  # skipped items are not scored as wrong
    results = lines(tmp_path / "out" / RESULTS)
    assert [r["status"] for r in results] == ["skipped"] * 6 + ["ok"] and len(calls) == 1
    assert "6 items skipped (missing or unreadable video)" in (tmp_path / "out" / "report.md").read_text()
    write_benchmark(tmp_path, "mvbench", items=7)  # the videos are back: a rerun answers the skipped items
    again = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", options), model)
    assert again["tasks"][bench.task]["scored"] == 7 and len(calls) == 7
    assert [r["status"] for r in lines(tmp_path / "out" / RESULTS)] == ["ok"] * 7


def test_a_video_that_fails_to_decode_is_recorded_not_lost(tmp_path, model):
    bench = write_benchmark(tmp_path, "mvbench", items=2)
    bench.video_files[0].write_bytes(b"not a video at all" * 100)
    summary = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", FRAMES), model)
    results = lines(tmp_path / "out" / RESULTS)
    assert [r["status"] for r in results] == ["skipped", "ok"]
    assert results[0]["reason"].startswith("unreadable")
    assert summary["tasks"][bench.task]["skipped"] == 1


def test_videos_with_the_same_content_are_encoded_once(tmp_path, counted):
    model, calls = counted
    bench = write_benchmark(tmp_path, "mvbench", items=3)
    for path in bench.video_files[1:]:
        shutil.copyfile(bench.video_files[0], path)
    run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", FRAMES), model)
    assert len(calls) == 1


def test_a_video_that_fails_to_encode_leaves_the_others_their_own_clips(tmp_path, model, monkeypatch):
    """A video that fails midway through its clips: the clips of it still queued are dropped, not taken
    for the next video decoded on that queue."""
    bench = write_benchmark(tmp_path, "mvbench", items=6, fps=8.0)  # 52 frames between the clip bounds
    options = EvalOptions(num_frames=40, progress=False, isolate=False)  # 10 clips: 2 left after the first batch
    tokens: dict[str, dict[str, object]] = {"clean": {}, "failing": {}}
    generate, encode = model.generate, model.encode_clip_batch
    seen = tokens["clean"]
    monkeypatch.setattr(model, "generate", lambda memory, question, *rest, **named:
                        seen.__setitem__(question, memory.tokens) or generate(memory, question, *rest, **named))
    run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "clean", options), model)

    def encode_failing_first(clips):
        if not failed:
            failed.append(len(clips))
            raise HicoError("the first video's tower call failed")
        return encode(clips)

    failed, seen = [], tokens["failing"]
    monkeypatch.setattr(model, "encode_clip_batch", encode_failing_first)
    run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "failing", options), model)
    results = {r["id"]: r for r in lines(tmp_path / "failing" / RESULTS)}
    unreadable = [i for i, r in results.items() if "first video's tower call" in r.get("reason", "")]
    assert failed == [8] and unreadable == [f"{bench.task}/0"] and results[unreadable[0]]["status"] == "skipped"
    prompts = {item.id: item.prompt for item in get_task(bench.task).load(bench.annotations)}
    assert tokens["failing"].keys() == {prompts[i] for i in results if i not in unreadable}
    assert len(tokens["clean"]) == 6
    for prompt, encoded in tokens["failing"].items():
        assert encoded.shape[0] == 40 * 16 and encoded.equal(tokens["clean"][prompt]), prompt


def test_prefetch_follows_the_video_order_within_its_budget(tmp_path, model, monkeypatch):
    """The store decodes ahead exactly the run's videos, in the order they are answered, with the run's
    decoders and byte budget; a budget of one clip at a time gives the same results."""
    bench = write_benchmark(tmp_path, "mlvu", items=6)
    plan = prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", FRAMES)
    config = model.model.config
    clip_bytes = config.local_num_frames * 3 * config.vision.image_size ** 2 * 4
    asked, prefetch = [], VideoStore.prefetch

    def spy(self, videos, *, workers, budget):
        prefetch(self, videos, workers=workers, budget=budget)
        asked.append((list(videos), workers, budget, [box.maxsize for box in self._prefetcher.queues]))

    monkeypatch.setattr(VideoStore, "prefetch", spy)
    options = EvalOptions(max_frames=8, progress=False, isolate=False, prefetch_bytes=6 * clip_bytes)
    normal = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "normal", options), model)
    videos = [bench.videos / path for path in dict.fromkeys(item.video.path
                                                            for item in get_task(bench.task).load(bench.annotations))]
    assert len(videos) == 3  # two questions per video
    ((wanted, workers, budget, bounds),) = asked
    assert [w.path for w in wanted] == [str(v) for v in videos] and workers == 2 and budget == 6 * clip_bytes
    assert all(w.sampling == plan.jobs[0].sampling and w.options == (("folder_fps", 1.0),) for w in wanted)
    assert bounds == [3, 3]  # six clips in all, three per decoding thread
    tiny = EvalOptions(max_frames=8, progress=False, isolate=False, prefetch_bytes=0, decoders=1)  # one clip at a time
    small = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "tiny", tiny), model)
    assert asked[1][1:] == (1, 0, [1])
    assert small["tasks"] == normal["tasks"]
    assert [r["response"] for r in lines(tmp_path / "tiny" / RESULTS)] == \
        [r["response"] for r in lines(tmp_path / "normal" / RESULTS)]


def test_prefetch_decoders_keep_one_worker_process_each(tmp_path, model, monkeypatch):
    """Isolated decoding starts a process per decode thread, not per video, at the lowest priority, closed
    with the run, and gives the tokens in-process decoding gives."""
    from hico.video.worker import WorkerClient

    starts = []
    original = WorkerClient._start
    monkeypatch.setattr(WorkerClient, "_start", lambda self: starts.append(self) or original(self))
    tokens: dict[bool, dict[str, object]] = {True: {}, False: {}}
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda memory, question, *rest, **named:
                        seen.__setitem__(question, memory.tokens) or generate(memory, question, *rest, **named))
    bench = write_benchmark(tmp_path, "mvbench", items=6)
    for isolate in (True, False):
        seen = tokens[isolate]
        options = EvalOptions(max_frames=8, progress=False, isolate=isolate)
        run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / f"out-{isolate}", options), model)
    assert len(bench.video_files) == 6 and len(starts) == 2
    assert [client.nice for client in starts] == [PREFETCH_NICE] * 2 == [19] * 2  # background work
    assert len(tokens[True]) == 6 and tokens[True].keys() == tokens[False].keys()
    for prompt, isolated in tokens[True].items():
        assert isolated.shape[0] == 8 * 16 and isolated.equal(tokens[False][prompt]), prompt
    assert all(client.proc is None for client in starts)  # closed with the run


def test_a_second_run_with_a_cache_decodes_no_video(tmp_path, counted, monkeypatch):
    """--cache: the first run's results are those of a run without it; a second run (a new output folder)
    opens no video and calls no tower, and gives the same results."""
    import hico.video.reader as reader

    model, calls = counted
    bench = write_benchmark(tmp_path, "mlvu", items=6)
    cached = EvalOptions(max_frames=8, progress=False, cache_dir=str(tmp_path / "cache"))  # worker decoding
    plain = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "plain", FRAMES), model)
    first = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "first", cached), model)
    assert len(calls) == 2 * 3  # three videos, encoded once each (and once for the plain run)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.prefix.safetensors"))) == 3  # each video's prefilled prompt prefix
    assert len(list(cache.iterdir())) == 6
    opened, prefilled = [], []
    prefill_prefix = model.model.prefill_prefix
    monkeypatch.setattr(model.model, "prefill_prefix", lambda *a, **k: prefilled.append(1) or prefill_prefix(*a, **k))
    original = reader.Video.__init__
    monkeypatch.setattr(reader.Video, "__init__", lambda self, path, **named: opened.append(path) or
                        original(self, path, **named))
    calls.clear()
    second = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "second", cached), model)
    assert opened == [] and calls == [] and prefilled == []  # nothing decoded, encoded or prefilled again
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mb")}  # noqa: E731
    results = {name: [strip(r) for r in lines(tmp_path / name / RESULTS)] for name in ("plain", "first", "second")}
    assert len(results["plain"]) == 6 and all(r["status"] == "ok" for r in results["plain"])
    assert results["first"] == results["plain"] and results["second"] == results["plain"]
    assert first["tasks"] == second["tasks"] == plain["tasks"]


def test_dropout_words_resolve_with_the_model(tmp_path, model):
    """EvalOptions takes the `DropSchedule.parse` vocabulary; off by default (as officially); "default" and
    "model" are the checkpoint's schedules, resolved by `run` and written to the summary."""
    configured = json.loads((embedded_path() / "config.json").read_text())  # mm_llm_compress on
    schedule = [configured["llm_compress_type"], configured["llm_compress_layer_list"],
                configured["llm_image_token_ratio_list"]]
    assert EvalOptions().dropout == DropSchedule() == EvalOptions(dropout="off").dropout
    assert EvalOptions(dropout="model").dropout == "model" and EvalOptions(dropout=None).dropout == "default"
    with pytest.raises(OptionError, match="unknown dropout"):
        EvalOptions(dropout="sometimes")
    bench = write_benchmark(tmp_path, "mvbench", items=1)
    settings = {}
    for word in ("off", "default", "model"):
        options = EvalOptions(max_frames=8, progress=False, isolate=False, dropout=word)
        summary = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / word, options), model)
        settings[word] = summary["settings"]["dropout"], summary["settings_text"]
    assert settings["off"][0] is None and "in-LLM dropout off (as officially)" in settings["off"][1]
    assert settings["default"] == settings["model"]
    assert settings["model"][0] == schedule and "(the official evaluation has none)" in settings["model"][1]


def test_two_torchrun_processes_give_the_results_of_one(tmp_path, model):
    bench = write_benchmark(tmp_path, "mlvu", items=4)
    one = run(prepare([bench.task], bench.annotations, bench.videos, tmp_path / "one", FRAMES), model)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(hico.__file__).parents[1]),
                                                                  os.environ.get("PYTHONPATH")) if p))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "hico.cli", "eval", bench.task, "--annotations", str(bench.annotations),
               "--video-root", str(bench.videos), "--out", str(tmp_path / "two"), "--max-frames", "8",
               "--no-progress"]  # the user's command: the same CLI under torchrun, decoding in worker processes
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # only rank 0 merges and reports
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["tasks"] == one["tasks"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mb")}  # noqa: E731
    two_results, one_results = lines(tmp_path / "two" / RESULTS), lines(tmp_path / "one" / RESULTS)
    assert [strip(r) for r in two_results] == [strip(r) for r in one_results]
    assert not list((tmp_path / "two").glob("results.rank*.jsonl"))  # merged into results.jsonl
    assert set(finished(tmp_path / "two")) == set(finished(tmp_path / "one"))


def test_limit_and_sampling_overrides(tmp_path):
    bench = write_benchmark(tmp_path, "mvbench", items=5)
    official = prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", EvalOptions(limit=3))
    assert [job.item.id for job in official.jobs] == [f"{bench.task}/{i}" for i in range(3)]
    sampling = official.jobs[0].sampling  # MVBench's official setting, with the record's clip bounds
    assert (sampling.policy, sampling.max_num_frames, sampling.min_num_frames) == ("dynamic_fps1", 512, 64)
    assert (sampling.start, sampling.end) == (0.5, 7.0)
    exact = prepare([bench.task], bench.annotations, bench.videos, tmp_path / "out", EvalOptions(num_frames=12))
    assert (exact.jobs[0].sampling.policy, exact.jobs[0].sampling.max_num_frames) == ("middle", 12)
    assert (exact.jobs[0].sampling.start, exact.jobs[0].sampling.end) == (0.5, 7.0)
    lv = write_benchmark(tmp_path / "lv", "lvbench", items=1)
    (job,) = prepare([lv.task], lv.annotations, lv.videos, tmp_path / "lv-out").jobs
    assert job.sampling.max_num_frames == 640 and job.item.video.frames
