"""`hico eval` on the command line: listing, errors users can cause (one line, exit 2), a small run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hico.cli import main
from hico.synthetic.benchmarks import write_benchmark

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
