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
import torch

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed here: `make test-lmms` builds "
                                "the .venv-lmms environment with it and runs these tests there")

from lmms_eval.api.instance import Instance, unwrap_generation_output  # noqa: E402

import hico  # noqa: E402
from hico.embedded import embedded_path  # noqa: E402
from hico.eval import lmms as plugin  # noqa: E402
from hico.prompt import chat_prompt, tokenize  # noqa: E402
from hico.synthetic.pictures import COLOURS, SHAPES  # noqa: E402
from hico.synthetic.tasks import CAPTION_QUESTION, write_demo_video  # noqa: E402
from hico.video.sampling import SamplingOptions  # noqa: E402

VIDEOS = 4

UTILS = '''
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(results[0].strip().endswith(doc["answer"]))}


def doc_to_choice(doc):
    return doc["choices"]
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


def write_choice_task(folder: Path, docs: list[dict]) -> None:
    """A local multiple-choice task: lmms-eval scores each of a document's choices by loglikelihood."""
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
        output_type: multiple_choice
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_choice: !function utils.doc_to_choice
        doc_to_target: gold
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))


def full_prefill_score(model, memory, context: str, continuation: str) -> tuple[float, bool]:
    """(negative log-likelihood per token, greedy) of `continuation` after the chat prompt, computed without
    the engine: one prefill of prompt + continuation with every position's logits (text-guided drops guided by
    the prompt's last token, as when the prompt is prefilled alone), log-softmax, summed."""
    prompt = tokenize(chat_prompt(context, memory.time_msg), model.tokenizer)
    target = model.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    embeds, span = model.model.embed(torch.cat([prompt, torch.tensor(target)]), memory.tokens)
    length, count = embeds.shape[1], len(target)
    with torch.no_grad():
        logits = model.model.prefill(embeds, span, model.schedule(), all_logits=True,
                                     query_positions=torch.tensor([length - count - 1])).logits[0, -count - 1:-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)[torch.arange(count), torch.tensor(target)]
    return -float(logprobs.sum()) / count, logits.argmax(dim=-1).tolist() == target


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
def test_multiple_choice_task_picks_the_most_likely_choice(demo, tmp_path) -> None:
    """A multiple_choice task through lmms-eval: each choice's score is the full-prefill computation's, and
    lmms-eval's pick (the smallest score) is the choice hico finds most likely per token."""
    _, docs = demo
    choice_docs = []
    for k, doc in enumerate(docs[:2]):
        colour, shape = doc["answer"].split()
        wrong = [f"{next(c for c in COLOURS if c != colour)} {shape}",
                 f"{colour} {next(s for s in SHAPES if s != shape)}"]
        choices = wrong[:k] + [doc["answer"]] + wrong[k:]
        choice_docs.append({"video": doc["video"], "question": doc["question"], "choices": choices, "gold": k})
    write_choice_task(tmp_path / "task", choice_docs)
    done = run_lmms_eval(tmp_path / "task", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    samples = [json.loads(line) for path in (tmp_path / "results").rglob("*hico_demo*.jsonl")
               for line in path.read_text().splitlines()]
    assert sorted(sample["doc_id"] for sample in samples) == [0, 1]
    model = hico.load(embedded_path())
    right = []
    for sample in samples:
        doc = choice_docs[sample["doc_id"]]
        memory = model.encode_video(doc["video"], SamplingOptions())
        expected = [full_prefill_score(model, memory, doc["question"], " " + choice) for choice in doc["choices"]]
        logged = sample["filtered_resps"]  # each choice's pair, its numbers written as text
        scores = [(float(score), greedy in (True, "True")) for score, greedy in logged]
        assert [s for s, _ in scores] == pytest.approx([s for s, _ in expected], rel=1e-4, abs=1e-4)
        assert [g for _, g in scores] == [g for _, g in expected]
        best = min(range(len(expected)), key=lambda i: expected[i][0])
        right.append(float(best == doc["gold"]))
    (summary,) = [json.loads(path.read_text()) for path in (tmp_path / "results").rglob("*_results.json")]
    assert summary["results"]["hico_demo"]["acc,none"] == pytest.approx(sum(right) / len(right))


def test_generation_settings_follow_the_task() -> None:
    options = plugin.generation_options({"max_new_tokens": 7, "temperature": 0, "do_sample": True, "top_p": None})
    assert (options.max_new_tokens, options.greedy, options.top_p) == (7, True, 1.0)
    assert plugin.generation_options({"temperature": 0.5, "do_sample": "true"}).temperature == 0.5
    with pytest.raises(plugin.OptionError, match="num_beams"):
        plugin.generation_options({"num_beams": 4})
    assert plugin.generation_options({"until": ["\n\n", "Question:"]}).stop == ("\n\n", "Question:")
    assert plugin.generation_options({"until": "\n\n"}).stop == ("\n\n",)  # one string, not its characters
    assert plugin.generation_options({}).stop == ()
    with pytest.raises(plugin.UnsupportedRequestError, match="video tasks"):
        plugin.video_of([object()], "images")


@pytest.fixture(scope="module")
def served(demo) -> plugin.HicoLmms:
    """The plugin as lmms-eval holds it, with the demo documents as the task "demo"."""
    model = plugin.HicoLmms(pretrained=str(embedded_path()))
    model.task_dict = {"demo": {"test": demo[1]}}
    return model


def request(kind: str, first: str, second: object, doc_id: int = 0) -> Instance:
    """A request as lmms-eval builds it: (context, generation_kwargs or continuation, doc_to_visual, doc_id,
    task, split)."""
    return Instance(request_type=kind, arguments=(first, second, lambda doc: [doc["video"]], doc_id, "demo", "test"),
                    idx=0, metadata={"task": "demo", "doc_id": doc_id, "repeats": 1})


def test_generate_until_ends_at_a_stop_string_in_the_engine(served, monkeypatch) -> None:
    answers = []
    generate = served.model.generate

    def recording(*args, **kwargs):
        answers.append(generate(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(served.model, "generate", recording)

    def answer(until: object) -> str:
        settings = {"max_new_tokens": 16, "temperature": 0, "do_sample": False, "until": until}
        return served.generate_until([request("generate_until", CAPTION_QUESTION, settings)])[0]

    full = answer([])
    stop = " " + full.split()[1]  # "a red circle" -> " red"
    assert len(full.split()) == 3 and answers[-1].finish_reason == "stop"
    cut = full[:full.index(stop)]
    assert answer([stop]) == cut
    assert answers[-1].finish_reason == "stop" and answers[-1].completion_tokens < answers[0].completion_tokens
    assert answer(["never said", stop]) == cut
    assert answer(stop) == cut


def test_a_video_asked_about_again_is_not_decoded_again(served) -> None:
    levels = []
    served.store.on_get = lambda stored: levels.append(stored.level)
    try:
        context = CAPTION_QUESTION
        served.generate_until([request("generate_until", context, {"max_new_tokens": 4}, doc_id=2)])
        served.loglikelihood([request("loglikelihood", context, " a", doc_id=2)])
        served.generate_until([request("generate_until", context, {"max_new_tokens": 4}, doc_id=3)])
    finally:
        served.store.on_get = None
    assert levels == ["encoded", "memory", "encoded"]


def test_loglikelihood_is_a_full_prefill_of_the_continuation(served, demo) -> None:
    _, docs = demo
    doc = docs[0]
    (generated,) = served.generate_until([request("generate_until", CAPTION_QUESTION, {"max_new_tokens": 16})])
    colour, shape = doc["answer"].split()
    wrong = f"a {next(c for c in COLOURS if c != colour)} {next(s for s in SHAPES if s != shape)}"
    continuations = [generated, wrong, " " + doc["answer"]]
    results = served.loglikelihood([request("loglikelihood", CAPTION_QUESTION, c) for c in continuations])
    scores = [unwrap_generation_output(result)[0] for result in results]  # what lmms-eval's evaluator keeps
    memory = served.model.encode_video(doc["video"], served.sampling)  # encoded again, not from the store
    expected = [full_prefill_score(served.model, memory, CAPTION_QUESTION, c) for c in continuations]
    assert [s for s, _ in scores] == pytest.approx([s for s, _ in expected], rel=1e-4, abs=1e-4)
    assert [g for _, g in scores] == [g for _, g in expected]
    assert expected[0][1] and not expected[1][1]  # the greedy answer is greedy; a wrong caption is not
    assert all(isinstance(s, float) and isinstance(g, bool) for s, g in scores)


def test_loglikelihood_needs_a_video(served) -> None:
    unconditional = Instance(request_type="loglikelihood", arguments=("", " a"), idx=0,
                             metadata={"task": "demo", "doc_id": 0, "repeats": 1})
    with pytest.raises(plugin.UnsupportedRequestError, match="acc_mutual_info"):
        served.loglikelihood([unconditional])
