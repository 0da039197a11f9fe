"""`hico eval` on the command line: listing, errors users can cause (one line, exit 2), a small run, the sampling
and dropout vocabulary, a second --cache run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hico.cli import build_parser, dropout_schedule, main
from hico.dropout import DropSchedule
from hico.errors import OptionError
from hico.synthetic.benchmarks import write_benchmark
from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

ANNOTATIONS = Path(__file__).resolve().parents[1].parent.parent / "shared" / "reference" / "eval_annotations"
if not ANNOTATIONS.exists():
    ANNOTATIONS = Path("/work/shared/reference/eval_annotations")


@pytest.mark.skipif(not ANNOTATIONS.exists(), reason="shared reference annotations not present")
def test_list_prints_every_task_with_its_item_count(capsys, monkeypatch):
    monkeypatch.setenv("HICO_EVAL_ANNOTATIONS", str(ANNOTATIONS))
    assert main(["eval", "--list"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows["mvbench"].strip() == "4000" and rows["mvbench_action_sequence"].strip() == "200"
    assert rows["mlvu_mc"].strip() == "2175" and rows["lvbench_tv"].strip() == "250"
    assert rows["longvideobench_val_v"].strip() == "1337" and rows["videomme_w_subtitle"].strip() == "2700"
    assert rows["temporal_grounding_charades"].strip() == "3720"
    assert rows["perceptiontest_val_mc"].strip() == "no annotations"


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HICO_EVAL_ANNOTATIONS", raising=False)
    bench = write_benchmark(tmp_path, "mvbench", items=2)
    bench.video_files[0].unlink()
    base = ["eval", bench.task, "--video-root", str(bench.videos), "--out", str(tmp_path / "out")]
    cases = [
        (base, "give --annotations"),
        (base[:1] + ["mvbench_nope"] + base[2:] + ["--annotations", str(bench.annotations)], "unknown benchmark task"),
        (base + ["--annotations", str(bench.annotations)], "1 of 2 items have a missing or unreadable video"),
        (base + ["--annotations", str(tmp_path / "nowhere")], "annotation file not found"),
        (base + ["--annotations", str(bench.annotations), "--frames", "8", "--fps", "1"], "either --frames or --fps"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("hico: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are known good


def test_a_small_run_writes_results_summary_and_report(tmp_path, capsys):
    bench = write_benchmark(tmp_path, "charades", items=2)
    argv = ["eval", bench.task, "--annotations", str(bench.annotations), "--video-root", str(bench.videos),
            "--out", str(tmp_path / "out"), "--max-frames", "8", "--no-progress"]
    assert main(argv) == 0
    assert "temporal_grounding_charades: official" in capsys.readouterr().out
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["temporal_grounding_charades/0", "temporal_grounding_charades/1"]
    assert all(r["frames"] == 8 and "iou" in r["score"]["official"] for r in results)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["max_frames"] == 8
    assert "| R@0.5 |" in (tmp_path / "out" / "report.md").read_text()
    assert main(argv) == 0  # a rerun finds everything done
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2


def test_num_frames_and_its_old_spelling_frames_both_work(tmp_path, capsys):
    bench = write_benchmark(tmp_path, "charades", items=1)
    base = ["eval", bench.task, "--annotations", str(bench.annotations), "--video-root", str(bench.videos),
            "--no-progress"]
    for flag in ("--num-frames", "--frames"):
        assert main(base + ["--out", str(tmp_path / flag), flag, "12"]) == 0
        (result,) = [json.loads(line) for line in (tmp_path / flag / "results.jsonl").read_text().splitlines()]
        summary = json.loads((tmp_path / flag / "summary.json").read_text())
        assert result["frames"] == 12 and summary["settings"]["frames"] == 12
        assert "sampling overridden: frames 12 (not the official setting)" in summary["settings_text"]
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "both"), "--num-frames", "8", "--fps", "1"]) == 2
    assert "give either --num-frames or --fps, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = capsys.readouterr().out
    assert "--num-frames" in help_text and "--frames" not in help_text.replace("--num-frames", "")
    assert "In-LLM dropout is off unless --dropout asks for it, as in the official evaluation" in \
        " ".join(help_text.split())
    assert "off, model" in help_text and "(default: off)" in " ".join(help_text.split())


def test_dropout_reads_the_shared_vocabulary_off_unless_asked(tmp_path):
    parser = build_parser()
    argv = ["eval", "mvbench", "--video-root", str(tmp_path), "--out", str(tmp_path / "out")]
    setting = lambda *extra: dropout_schedule(parser.parse_args(argv + list(extra)))  # noqa: E731
    assert setting() == DropSchedule() == setting("--dropout", "off")  # not given: off, as officially
    assert not setting().enabled
    assert setting("--dropout", "default") == "default" and setting("--dropout", "model") == "model"
    assert setting("--dropout", "uniform", "--dropout-layers", "1,3", "--dropout-ratios", "1,0.5,0.25") == \
        DropSchedule("uniform", (1, 3), (1.0, 0.5, 0.25))
    with pytest.raises(OptionError, match="takes no layers or ratios"):
        setting("--dropout-layers", "2")  # as --dropout off --dropout-layers 2
    with pytest.raises(OptionError, match="takes no layers or ratios"):
        setting("--dropout", "model", "--dropout-layers", "2")
    with pytest.raises(SystemExit):
        setting("--dropout", "sometimes")


def test_dropout_words_on_a_checkpoint_whose_schedule_is_configured_but_off(tmp_path):
    """default = the checkpoint's inference setting (mm_llm_compress off: none), model = its configured
    llm_compress_* schedule, off = none; the summary says which ran."""
    config = tiny_official_config()
    config.update(llm_compress_type="uniform", llm_compress_layer_list=[2], llm_image_token_ratio_list=[1.0, 0.5])
    write_random_checkpoint(tmp_path / "ckpt", config, seed=3)
    bench = write_benchmark(tmp_path, "mvbench", items=1)
    ran = {}
    for word in ("default", "model", "off"):
        argv = ["eval", bench.task, "--annotations", str(bench.annotations), "--video-root", str(bench.videos),
                "--out", str(tmp_path / word), "--max-frames", "8", "--no-progress", "--model", str(tmp_path / "ckpt"),
                "--dropout", word]
        assert main(argv) == 0
        ran[word] = json.loads((tmp_path / word / "summary.json").read_text())["settings"]["dropout"]
    assert ran == {"default": None, "model": ["uniform", [2], [1.0, 0.5]], "off": None}


def test_a_second_cache_run_opens_no_video_and_gives_the_same_results(tmp_path, monkeypatch):
    import hico.video.reader as reader

    bench = write_benchmark(tmp_path, "mlvu", items=4)
    base = ["eval", bench.task, "--annotations", str(bench.annotations), "--video-root", str(bench.videos),
            "--max-frames", "8", "--no-progress", "--cache", str(tmp_path / "cache")]
    assert main(base + ["--out", str(tmp_path / "first")]) == 0
    opened = []
    original = reader.Video.__init__
    monkeypatch.setattr(reader.Video, "__init__", lambda self, path, **named: opened.append(path) or
                        original(self, path, **named))
    assert main(base + ["--out", str(tmp_path / "second")]) == 0
    assert opened == []
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mb")}  # noqa: E731
    first, second = ([strip(json.loads(line)) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
                     for name in ("first", "second"))
    assert len(first) == 4 and all(r["status"] == "ok" for r in first) and second == first
