"""hico.eval tasks against the official pipeline's recorded prompts, targets, scores and aggregates
(../shared/reference/eval_prompts.json) and the shared annotation files."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from hico.errors import HicoError
from hico.eval import charades, get_task, longvideobench, mvbench, perceptiontest, tasks, videomme
from hico.eval.choice import first_letter, stated_letter

REFERENCE = Path(__file__).resolve().parents[1].parent.parent / "shared" / "reference"
if not REFERENCE.exists():
    REFERENCE = Path("/work/shared/reference")
ANNOTATIONS = REFERENCE / "eval_annotations"
pytestmark = pytest.mark.skipif(not ANNOTATIONS.exists(), reason="shared reference annotations not present")

GROUPED = ("MVBench", "MLVU_MC", "LVBench")
ALL = ("MVBench", "MLVU_MC", "LVBench", "LongVideoBench", "Video-MME", "Charades-STA")


@cache
def fixture() -> dict:
    return json.loads((REFERENCE / "eval_prompts.json").read_text())


@cache
def loaded(name: str, subtitles: str | None = None) -> dict[int, object]:
    return {item.source[1]: item for item in get_task(name).load(ANNOTATIONS, subtitles=subtitles)}


def recorded(benchmark: str) -> list[dict]:
    return fixture()["benchmarks"][benchmark]["items"]


def official_prefix(item) -> str:
    module = {"mvbench": mvbench, "mlvu": __import__("hico.eval.mlvu", fromlist=["x"]),
              "lvbench": __import__("hico.eval.lvbench", fromlist=["x"]), "longvideobench": longvideobench,
              "videomme": videomme, "temporal": charades}[item.task.split("_")[0]]
    prefix = module.OFFICIAL_PREFIX
    if isinstance(prefix, dict):
        return prefix.get(item.category, mvbench.DEFAULT_PREFIX)
    return prefix


def test_task_names_are_the_official_ones():
    names = tasks()
    for name in ("mvbench", "mvbench_action_sequence", "mlvu_mc", "mlvu_mc_count", "lvbench", "lvbench_cartoon",
                 "longvideobench_val_v", "videomme", "videomme_w_subtitle", "temporal_grounding_charades",
                 "perceptiontest_val_mc"):
        assert name in names
    for benchmark in GROUPED:
        entry = fixture()["benchmarks"][benchmark]
        assert get_task(entry["group"]).members == tuple(entry["group_tasks_in_official_order"])
    assert len([n for n in names if n.startswith("mvbench_")]) == 20
    with pytest.raises(HicoError, match="unknown benchmark task"):
        get_task("mvbench_nope")


@pytest.mark.parametrize("name, count", [("mvbench", 4000), ("mlvu_mc", 2175), ("lvbench", 1519),
                                         ("longvideobench_val_v", 1337), ("videomme", 2700),
                                         ("temporal_grounding_charades", 3720)])
def test_readers_count_every_record(name, count):
    items = get_task(name).load(ANNOTATIONS)
    assert len(items) == count
    assert len({item.id for item in items}) == count


def test_reader_details_from_the_annotation_readme():
    mv = {n: len(get_task(f"mvbench_{n}").load(ANNOTATIONS)) for n in mvbench.ROOTS}
    assert set(mv.values()) == {200}
    counterfactual = get_task("mvbench_counterfactual_inference").load(ANNOTATIONS)
    single = [i.source[1] for i in counterfactual if len(i.options) == 1]
    assert single == [81, 98, 111, 137, 162]
    counts = {n: len(get_task(f"mlvu_mc_{n}").load(ANNOTATIONS)) for n in
              ("plotqa", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")}
    assert counts == {"plotqa": 539, "needle": 355, "ego": 352, "count": 206, "order": 259, "anomaly_reco": 200,
                      "topic_reasoning": 264}
    never = [i.source[1] for i in get_task("mlvu_mc_needle").load(ANNOTATIONS) if i.answer_letter is None]
    assert never == [34, 338]
    lv = {k: len(get_task(f"lvbench_{k}").load(ANNOTATIONS)) for k in ("cartoon", "documentary", "live",
                                                                       "selfmedia", "sport", "tv")}
    assert lv == {"cartoon": 271, "documentary": 197, "live": 244, "selfmedia": 317, "sport": 240, "tv": 250}
    assert all(i.video.frames and i.video.folder_fps == 1.0 for i in get_task("lvbench").load(ANNOTATIONS))
    episodic = get_task("mvbench_episodic_reasoning").load(ANNOTATIONS)
    assert all(i.video.frames and i.video.folder_fps == 3.0 and i.video.start is not None for i in episodic)
    clips = get_task("mvbench_action_localization").load(ANNOTATIONS)
    assert all(i.video.start is not None and i.video.start < i.video.end for i in clips)
    assert all(i.video.start is None for i in get_task("mvbench_moving_count").load(ANNOTATIONS))
    lvb = get_task("longvideobench_val_v").load(ANNOTATIONS)
    assert sorted(len(i.options) for i in lvb).count(5) == 983 and [len(i.options) for i in lvb].count(3) == 1
    assert all(i.video.endswith(".mp4") for i in lvb)
    charade = get_task("temporal_grounding_charades").load(ANNOTATIONS)
    assert all(0 <= i.target[0] < i.target[1] for i in charade)
    assert all(i.prompt.count("..") >= 1 for i in charade)


@pytest.mark.parametrize("benchmark", ALL)
def test_prompts_targets_and_videos_equal_the_official_ones(benchmark):
    for ref in recorded(benchmark):
        item = loaded(ref["task"])[ref["record_index"]]
        assert item.source == (ref["annotation_file"], ref["record_index"])
        assert item.task == ref["task"]
        assert item.target == ref["target"]
        assert official_prefix(item) + item.video == ref["video_path"]
        media = ref["media_dict"]
        assert item.video.frames == (media["video_read_type"] == "img")
        if "start" in media:  # the fixture stores times rounded to 10 decimals
            assert [item.video.start, item.video.end] == pytest.approx([media["start"], media["end"]], abs=1e-9)
        else:
            assert item.video.start is None and item.video.end is None
        if "gt_letter_used_by_scoring" in ref:
            assert item.answer_letter == ref["gt_letter_used_by_scoring"]
        if benchmark == "LongVideoBench":
            assert item.prompt == ref["prompt_with_empty_subtitle_list"]  # loaded without --subtitles
            assert item.notes == (longvideobench.NO_SUBTITLES,)
        else:
            assert item.prompt == ref["prompt"]


def test_generation_settings_equal_the_official_ones():
    for benchmark in GROUPED:
        for name, config in fixture()["benchmarks"][benchmark]["task_configs"].items():
            settings = get_task(name).settings
            assert settings.max_new_tokens == config["generation_config_passed_to_model_chat"]["max_new_tokens"]
            assert settings.max_num_frames == config["max_num_frames"]
    for benchmark, name in (("LongVideoBench", "longvideobench_val_v"), ("Video-MME", "videomme"),
                            ("Charades-STA", "temporal_grounding_charades"),
                            ("PerceptionTest", "perceptiontest_val_mc")):
        config = fixture()["benchmarks"][benchmark]["task_config"]
        generation = config["generation_config_passed_to_model_chat"]
        assert get_task(name).settings.max_new_tokens == generation["max_new_tokens"]
        assert get_task(name).settings.max_num_frames == config["max_num_frames"]


def test_longvideobench_subtitles_are_selected_as_officially(tmp_path):
    for ref in recorded("LongVideoBench"):
        name = Path(ref["subtitle_file_read"]).name
        (tmp_path / name).write_text(json.dumps(ref["synthetic_subtitles"]))
    for ref in recorded("LongVideoBench"):
        item = loaded("longvideobench_val_v", str(tmp_path))[ref["record_index"]]
        assert item.prompt == ref["prompt"]
        assert item.notes == ()


def test_videomme_subtitle_prompts(tmp_path):
    for ref in recorded("Video-MME"):
        (tmp_path / f"{ref['doc']['videoID']}.srt").write_text(ref["synthetic_srt"])
    without = loaded("videomme_w_subtitle")
    with_srt = loaded("videomme_w_subtitle", str(tmp_path))
    for ref in recorded("Video-MME"):
        assert without[ref["record_index"]].prompt == ref["prompt_w_subtitle_when_srt_missing"]
        assert without[ref["record_index"]].notes == (videomme.NO_SRT,)
        assert with_srt[ref["record_index"]].prompt == ref["prompt_w_subtitle_with_synthetic_srt"]


def official_result(benchmark: str, item, response: str) -> dict:
    result = get_task(item.task).score(item, response)
    if benchmark == "Charades-STA":
        return {"process_results": result["official"], "eval_tvg_extract_time": result["extract_time"],
                "interval_scored": result["interval"], "fallback_dummy_interval": result["fallback_dummy_interval"],
                "iou": result["iou"], "hit": {str(t): result["iou"] >= t for t in charades.THRESHOLDS}}
    return result["official"]


@pytest.mark.parametrize("benchmark", ALL)
def test_per_item_scores_equal_the_official_results(benchmark):
    for ref in recorded(benchmark):
        item = loaded(ref["task"])[ref["record_index"]]
        for kind, response in ref["responses"].items():
            got = official_result(benchmark, item, response)
            want = ref["results"][kind]
            if benchmark == "Charades-STA":
                assert got["iou"] == pytest.approx(want["iou"], abs=1e-9)
                got["iou"] = want["iou"]
            assert got == want, (ref["task"], ref["record_index"], kind)
            if benchmark == "LongVideoBench":
                assert get_task(item.task).score(item, response)["random_fallback"] == \
                    ref["result_depends_on_random_state"][kind]
        for probe in ref.get("probe_results", []):
            assert official_result(benchmark, item, probe["response"]) == probe["result"], probe["response"]


def scenario_results(benchmark: str, scenario: str, mode: str = "official") -> dict[str, list[dict]]:
    """Per task: the score dicts of every recorded item answered with one response kind (or 'mixed')."""
    per_task = defaultdict(list)
    for ref in recorded(benchmark):
        item = loaded(ref["task"])[ref["record_index"]]
        kind = ref["mixed_response_kind"] if scenario == "mixed" else scenario
        per_task[ref["task"]].append(get_task(ref["task"]).score(item, ref["responses"][kind], mode))
    return per_task


@pytest.mark.parametrize("benchmark", GROUPED)
def test_group_aggregates_equal_the_official_ones(benchmark):
    entry = fixture()["benchmarks"][benchmark]
    group = get_task(entry["group"])
    for scenario, want in entry["aggregate"]["group"].items():
        per_task = scenario_results(benchmark, scenario)
        for name, results in per_task.items():
            value = get_task(name).aggregate(results)["overall"]
            expected = entry["aggregate"]["per_task"][name][scenario]
            assert value == pytest.approx(expected, abs=1e-12) and type(value) is type(expected), (name, scenario)
        combined = group.aggregate([r for results in per_task.values() for r in results])
        assert combined["overall"] == pytest.approx(want, abs=1e-12), scenario


def test_longvideobench_aggregate_and_its_log_equal_the_official_ones():
    for scenario, want in fixture()["benchmarks"]["LongVideoBench"]["aggregate"]["scenarios"].items():
        results = scenario_results("LongVideoBench", scenario)["longvideobench_val_v"]
        got = get_task("longvideobench_val_v").aggregate(results)
        assert got["overall"] == want["return"]
        assert got["logged"] == want["logged"][0]


@pytest.mark.parametrize("name", ["videomme", "videomme_w_subtitle"])
def test_videomme_aggregate_and_its_log_equal_the_official_ones(name):
    for scenario, want in fixture()["benchmarks"]["Video-MME"]["aggregate"]["scenarios"].items():
        results = scenario_results("Video-MME", scenario)["videomme"]
        got = get_task(name).aggregate(results)
        assert got["overall"] == pytest.approx(want["return"], abs=1e-12)
        assert got["logged"] == want["logged"]


def test_charades_recall_equals_eval_tvg():
    for scenario, want in fixture()["benchmarks"]["Charades-STA"]["aggregate"]["scenarios"].items():
        results = scenario_results("Charades-STA", scenario)["temporal_grounding_charades"]
        got = get_task("temporal_grounding_charades").aggregate(results)
        assert len(results) == want["submission_entries"]
        printed = [f"IOU {t}: {got[f'R@{t}']}" for t in charades.THRESHOLDS]
        assert printed == want["eval_tvg_stdout_summary"], scenario


def test_perceptiontest_formatting_and_scoring_equal_the_official_example(tmp_path):
    example = fixture()["benchmarks"]["PerceptionTest"]["synthetic_example"]
    assert perceptiontest.prompt(example["doc"]) == example["prompt"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / perceptiontest.FOLDER
    folder.mkdir(parents=True)
    doc = dict(example["doc"], answer_id=str(example["doc"]["answer_id"]))
    pq.write_table(pa.Table.from_pylist([doc]), folder / "validation-00000-of-00001.parquet")
    task = get_task("perceptiontest_val_mc")
    (item,) = task.load(tmp_path)
    assert item.target == example["target"] and item.prompt == example["prompt"]
    assert perceptiontest.OFFICIAL_PREFIX + item.video == example["visual"][0]
    for kind, response in example["responses"].items():
        assert task.score(item, response)["official"] == example["results"][kind], kind
    with pytest.raises(HicoError, match="no validation"):
        task.load(tmp_path / "elsewhere")


def test_official_quirks_and_their_strict_fixes():
    # mcq_acc: first standalone letter, "X. text" form, lower case counts, "CD" reads as nothing
    assert [first_letter(r) for r in ("A person walks in; the answer is C", "I think it is D or C", "c",
                                      "C. the cat", "CD")] == ["A", "D", "C", "C", "cd"]
    options = ("red", "green", "blue", "yellow")
    assert stated_letter("A person walks in; the answer is C", options) == "C"
    assert stated_letter("(B) green", options) == "B"
    assert stated_letter("The best option is D", options) == "D"
    assert stated_letter("I think it is D or C", options) is None  # ambiguous: not guessed
    assert stated_letter("blue", options) == "C"
    assert stated_letter("", options) is None
    assert stated_letter("I don't know", options) is None
    assert videomme.first_capital("Answer: C") == "A" and videomme.first_capital("c") == ""
    assert charades.extract_official("From 3.2 seconds to 10.5 seconds.") == []
    assert charades.extract_strict("From 3.2 seconds to 10.5 seconds.") == [3.2, 10.5]
    assert charades.extract_official("00:00:03 - 00:00:10") == [[0.0, 3.0]]
    assert charades.extract_strict("00:00:03 - 00:00:10") == [3.0, 10.0]
    assert charades.extract_strict("The event starts at 24.3 seconds and ends at 30.4 seconds.") == [24.3, 30.4]
    assert charades.extract_strict("none") is None


def test_strict_mode_scores_and_aggregates():
    refs = recorded("MVBench")[:20]
    task = get_task("mvbench_action_sequence")
    items = [loaded(r["task"])[r["record_index"]] for r in refs if r["task"] == task.name]
    empty = [task.score(i, "", "strict") for i in items]
    assert not any(r["correct"] for r in empty)
    assert task.aggregate(empty, "strict")["overall"] == 0.0  # empty answers count as wrong in strict mode
    right = [task.score(i, f"The answer is ({i.answer_letter}).", "strict") for i in items]
    assert task.aggregate(right, "strict")["overall"] == 100.0
    lvb = loaded("longvideobench_val_v")[0]
    strict = get_task("longvideobench_val_v").score(lvb, "I don't know", "strict")
    assert strict["pred"] == "" and not strict["correct"] and not strict["random_fallback"]
    with pytest.raises(HicoError, match="scoring mode"):
        task.score(items[0], "A", "lenient")
