"""hico.eval.lmms: the `hico` model in lmms-eval, run end to end offline on a local task over synthetic videos.

lmms-eval cannot share hico's main environment (it declares av<16, hico pins av 18.1.0), so these tests run in
`.venv-lmms` (`make test-lmms`) and skip elsewhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed here: `make test-lmms` builds "
                                "the .venv-lmms environment with it and runs these tests there")

from hico.embedded import embedded_path  # noqa: E402
from hico.eval import lmms as plugin  # noqa: E402
from hico.synthetic.pictures import COLOURS, SHAPES  # noqa: E402
from hico.synthetic.tasks import CAPTION_QUESTION, write_demo_video  # noqa: E402

VIDEOS = 4

UTILS = '''
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(results[0].strip().endswith(doc["answer"]))}
'''


def write_task(folder: Path, docs: list[dict], output_type: str = "generate_until") -> None:
    """A local lmms-eval task: a JSON-lines file loaded by `datasets` from disk, a YAML and its utils.py."""
    folder.mkdir(parents=True)
    (folder / "docs.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (folder / "utils.py").write_text(UTILS)
    (folder / "hico_demo.yaml").write_text(textwrap.dedent(f"""\
        task: hico_demo
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "docs.jsonl"}
        test_split: test
        output_type: {output_type}
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        doc_to_choice: ["a", "b"]
        generation_kwargs:
          max_new_tokens: 16
          temperature: 0
          do_sample: false
        process_results: !function utils.process_results
        metric_list:
          - metric: accuracy
            aggregation: mean
            higher_is_better: true
        """))


def run_lmms_eval(task_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(out / "hf"),
               HF_DATASETS_CACHE=str(out / "hf" / "datasets"))
    return subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "hico",
                           "--model_args", f"pretrained={embedded_path()}", "--tasks", "hico_demo",
                           "--include_path", str(task_dir), "--batch_size", "1", "--log_samples",
                           "--output_path", str(out / "results")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=out)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("lmms")
    docs = []
    for seed in range(VIDEOS):
        video = root / "videos" / f"{seed}.mp4"
        video.parent.mkdir(exist_ok=True)
        spec, _ = write_demo_video(video, frames=64, seed=1000 + seed)
        docs.append({"video": str(video), "question": CAPTION_QUESTION, "answer": f"{spec.colour} {spec.shape}"})
    return root, docs


@pytest.mark.slow  # about 35 s on 2 cores (lmms-eval's start-up is most of it)
def test_lmms_eval_runs_a_local_video_task_with_the_embedded_model(demo, tmp_path) -> None:
    import hico
    from hico.video.sampling import SamplingOptions

    root, docs = demo
    write_task(tmp_path / "task", docs)
    done = run_lmms_eval(tmp_path / "task", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    samples = [json.loads(line) for path in (tmp_path / "results").rglob("*hico_demo*.jsonl")
               for line in path.read_text().splitlines()]
    assert sorted(sample["doc_id"] for sample in samples) == list(range(VIDEOS))
    # Independent expectation: hico's own API on the same video and question (the plugin's defaults).
    model = hico.load(embedded_path())
    for sample in samples:
        doc = docs[sample["doc_id"]]
        expected = model.answer(model.encode_video(doc["video"], SamplingOptions()), doc["question"])
        response = sample["filtered_resps"]
        assert response == expected
        assert re.fullmatch(rf"an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})", response), response
    correct = [float(sample["filtered_resps"].endswith(docs[sample["doc_id"]]["answer"])) for sample in samples]
    (summary,) = [json.loads(path.read_text()) for path in (tmp_path / "results").rglob("*_results.json")]
    assert summary["results"]["hico_demo"]["accuracy,none"] == pytest.approx(sum(correct) / VIDEOS)
    assert sum(correct) >= 2  # the embedded model names 5 of 6 demo pictures (test_embedded); chance is 1 in 48


@pytest.mark.slow
def test_loglikelihood_task_is_a_clear_error(demo, tmp_path) -> None:
    _, docs = demo
    write_task(tmp_path / "task", docs[:1], output_type="multiple_choice")
    done = run_lmms_eval(tmp_path / "task", tmp_path)
    assert "loglikelihood, which hico's lmms-eval model does not compute" in done.stdout + done.stderr


def test_generation_settings_follow_the_task() -> None:
    options = plugin.generation_options({"max_new_tokens": 7, "temperature": 0, "do_sample": True, "top_p": None})
    assert (options.max_new_tokens, options.greedy, options.top_p) == (7, True, 1.0)
    assert plugin.generation_options({"temperature": 0.5, "do_sample": "true"}).temperature == 0.5
    with pytest.raises(plugin.OptionError, match="num_beams"):
        plugin.generation_options({"num_beams": 4})
    assert plugin.cut_at_stops("a red circle\n\nQuestion:", ["\n\n", "Question:"]) == "a red circle"
    with pytest.raises(plugin.UnsupportedRequestError, match="video tasks"):
        plugin.video_of([object()], "images")
