"""Live video (issue 25): streaming NIAH recall with the embedded model, and the time to first token with
text-guided in-LLM dropout as the stream grows.

Recall. A 1 fps stream of a held-out haystack (`hico.synthetic.tasks.write_haystack` with the seed of
bench/tiny_model.py's 4,096-frame NIAH: shots of procedural motion and pans over photos training never used,
64 px H.264) holds one needle picture (the `hico niah needles` set of bench/tiny_model.py, seed 202, colour and
shape questions) shown for one whole clip (4 s at a clip boundary, inserted as `hico niah build` inserts it) at
t = 1-5 minutes. The needle's question is asked at t + delta for every delta, in the same stream (a question
does not disturb it), in the NIAH form (no time message) with open answers, scored as `hico niah run --answer
open` (the toy model answers in words, not option letters); each answer also records how many of the needle
clip's 64 tokens the cache still holds. A trial is a needle, a t, a haystack start and the seed of random
eviction; each trial is streamed without a budget and with each budget and score (`value_norm` and the `random`
baseline), and once as a control without the needle (what the model guesses from the haystack alone). Results
go to a resumable JSONL file; the report pools every result in it.

Dropout curve. Time to first token against stream length (1 fps, no budget) with in-LLM dropout off and with
the model's schedule (`default`: uniform0_attention, text-guided, so every question prefills all kept visual
tokens again): median and fastest of up to 5 questions per point (fewer where they take over 30 s).

Jobs run in `--workers` processes of `--threads` torch threads each: on a loaded 2-core machine 2 threads per
process spin against each other (19x slower than 1 thread in one measurement), so the default is 1.

  python bench/live_niah.py                                      # 4 trials of every config + the curve, docs/
  python bench/live_niah.py --trials 6 --first-trial 4 --no-curve     # 6 more trials (resumes, pools)
  python bench/live_niah.py --trials 0 --workers 1 --redo-curve  # the curve again, alone (the report takes the last)
  python bench/live_niah.py --report                             # table, heat-map and docs from results so far
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "live-niah"
RESULTS = CACHE / "results.jsonl"
HEATMAP = ROOT / "docs" / "live_niah.png"
HAYSTACK_FRAMES = 4096
HAYSTACK_SEED, NEEDLE_SEED, NEEDLES = 101 + HAYSTACK_FRAMES, 202, 32  # bench/tiny_model.py's 4,096-frame inputs
DELTAS = (0.1, 1.0, 5.0, 15.0, 30.0, 60.0)  # minutes from the needle to the question
CURVE_MINUTES = (1.0, 5.0, 15.0, 30.0, 60.0)
NEEDLE_AT = (15, 75)  # the needle's clip index range: t in [1, 5) minutes
CONTROL_BUDGET = 1024  # the control stream (no needle shown): what the model answers from the haystack alone
CLIP = 4


def inputs() -> tuple[Path, list[dict]]:
    """The haystack's decoded frames (an .npy file, made once) and the needle records."""
    from hico.embedded.recipe import ATTRIBUTES
    from hico.niah.synthetic import NeedleSetOptions, write_needle_set
    from hico.synthetic.tasks import write_haystack
    from hico.video.reader import Video
    from hico.video.sampling import SamplingOptions

    CACHE.mkdir(parents=True, exist_ok=True)
    pixels = CACHE / f"haystack-{HAYSTACK_FRAMES}.npy"
    if not pixels.exists():
        video = CACHE / f"haystack-{HAYSTACK_FRAMES}.mp4"
        if not video.exists():
            write_haystack(video, HAYSTACK_FRAMES, seed=HAYSTACK_SEED)
        with Video(video) as reader:
            frames = np.stack([f.pixels for f in reader.frames(reader.plan(SamplingOptions.plain(fps=1.0)))])
        np.save(pixels, frames)
    needles = CACHE / f"needles-{NEEDLES}"
    if not needles.exists():
        write_needle_set(needles, NeedleSetOptions(single=NEEDLES, multi=0, seed=NEEDLE_SEED, attributes=ATTRIBUTES))
    records = json.loads((needles / "niah-synthetic-singlehop.json").read_text())
    return pixels, [dict(r, image=str(needles / r["image"])) for r in records]


def trial_plan(trial: int, needles: list[dict]) -> dict:
    """What a trial streams: its needle, the needle's first frame t (seconds), the haystack frame it starts at."""
    rng = random.Random(1000 + trial)
    return {"trial": trial, "needle": trial % len(needles), "t": CLIP * rng.randrange(*NEEDLE_AT),
            "offset": rng.randrange(HAYSTACK_FRAMES)}


class Stream:
    """The frames of one trial: the haystack from `offset` (wrapping), the needle picture on frames t..t+3
    (with no picture, the control: the haystack alone)."""

    def __init__(self, haystack: np.ndarray, picture: np.ndarray | None, t: int, offset: int) -> None:
        self.haystack, self.picture, self.t, self.offset = haystack, picture, t, offset

    def frame(self, k: int) -> np.ndarray:
        if self.picture is None:
            return self.haystack[(self.offset + k) % len(self.haystack)]
        if self.t <= k < self.t + CLIP:
            return self.picture
        shown = k if k < self.t else k - CLIP
        return self.haystack[(self.offset + shown) % len(self.haystack)]


# --- jobs, run in worker processes ----------------------------------------------------------------------------
_WORKER: dict = {}


def _start_worker(threads: int, pixels: str) -> None:
    torch.set_num_threads(threads)
    import hico
    from hico.embedded import WEIGHTS

    _WORKER["model"] = hico.load(WEIGHTS)
    _WORKER["haystack"] = np.load(pixels, mmap_mode="r")


def _question(needle: dict) -> tuple[str, str]:
    from hico.niah.run import open_question
    from hico.prompt import niah_prompt

    stem, expected = open_question(needle["question"], needle["answer"])
    return niah_prompt(stem), expected


def _ask(live, prompt: str, expected: str, tokens: int) -> dict:
    """The needle question on the live stream (NIAH prompt, greedy open answer, `hico niah run` scoring)."""
    import hico

    answer = live.generate("", prompt=prompt, config=hico.GenerationConfig(max_new_tokens=tokens))
    text = live.engine.tokenizer.decode(list(answer.token_ids), skip_special_tokens=True)
    return {"answer": text.strip(), "correct": text.strip().lower() == expected.lower(),
            "ttft_s": answer.timings.first_token_s}


def recall_job(job: dict) -> dict:
    """One trial streamed with one budget and score; the question asked at t + delta for each delta. Besides
    the answer: how many of the needle clip's 64 visual tokens the cache still holds (the stream's own record
    of which clip each kept token came from)."""
    from hico.niah.run import OPEN_MAX_TOKENS
    from hico.video.preprocess import read_image

    model = _WORKER["model"]
    plan, needle = job["plan"], job["needle_record"]
    prompt, expected = _question(needle)
    picture = read_image(needle["image"]) if job["shown"] else None
    stream = Stream(_WORKER["haystack"], picture, plan["t"], plan["offset"])
    live = model.live(fps=1.0, budget_tokens=job["budget"], score=job["score"], seed=plan["trial"])
    asks = {plan["t"] + round(60 * d): d for d in job["deltas"]}  # frames pushed -> delta asked then
    started = time.perf_counter()
    answers = []
    name = f"trial {plan['trial']} budget {job['budget'] or 'none'} {job['score']}" + ("" if job["shown"] else
                                                                                      " no needle")
    for k in range(max(asks)):
        live.push(stream.frame(k), float(k))
        if k + 1 in asks:
            needle_kept = live._clip_of.count(plan["t"] // CLIP) if job["shown"] else 0
            answers.append({"delta": asks[k + 1], "kept": live.kept_tokens, "needle_kept": needle_kept,
                            **_ask(live, prompt, expected, OPEN_MAX_TOKENS)})
        if (k + 1) % 900 == 0:
            print(f"  [{name}] {(k + 1) / 60:.0f} min streamed, {time.perf_counter() - started:.0f} s", flush=True)
    return {"kind": "recall", "trial": plan["trial"], "budget": job["budget"], "score": job["score"],
            "shown": job["shown"], "needle": plan["needle"], "t": plan["t"], "offset": plan["offset"],
            "expected": expected, "deltas": list(job["deltas"]), "answers": answers,
            "seconds": round(time.perf_counter() - started, 1)}


def curve_job(job: dict) -> dict:
    """One stream without a budget, `dropout` off or the model's; TTFT of the needle question at each length."""
    from hico.niah.run import OPEN_MAX_TOKENS
    from hico.video.preprocess import read_image

    model = _WORKER["model"]
    needle = job["needle_record"]
    prompt, expected = _question(needle)
    stream = Stream(_WORKER["haystack"], read_image(needle["image"]), 20, 0)
    live = model.live(fps=1.0, dropout=job["dropout"])
    points = []
    started = time.perf_counter()
    ingest = 0.0
    pushed = 0
    for minutes in job["minutes"]:
        mark = time.perf_counter()
        while pushed < round(60 * minutes):
            live.push(stream.frame(pushed), float(pushed))
            pushed += 1
        ingest += time.perf_counter() - mark
        asked = [_ask(live, prompt, expected, OPEN_MAX_TOKENS)]
        while len(asked) < 5 and sum(a["ttft_s"] for a in asked) < 30:
            asked.append(_ask(live, prompt, expected, 1))
        points.append({"minutes": minutes, "kept": live.kept_tokens, "ingest_s": round(ingest, 1),
                       "ttft_s": [a["ttft_s"] for a in asked], "answer": asked[0]["answer"],
                       "correct": asked[0]["correct"]})
        ttft = 1000 * statistics.median(points[-1]["ttft_s"])
        print(f"  [curve dropout {job['dropout']}] {minutes:g} min: TTFT {ttft:.0f} ms ({len(asked)} questions), "
              f"answer {asked[0]['answer']!r} ({'right' if asked[0]['correct'] else 'wrong'})", flush=True)
    return {"kind": "curve", "dropout": job["dropout"], "points": points, "expected": expected,
            "seconds": round(time.perf_counter() - started, 1)}


def run_job(job: dict) -> dict:
    return curve_job(job) if job["kind"] == "curve" else recall_job(job)


# --- the run and the report ------------------------------------------------------------------------------------
def job_key(record: dict) -> tuple:
    if record["kind"] == "curve":
        return ("curve", record["dropout"])
    return ("recall", record["trial"], record["budget"], record["score"], record["shown"], tuple(record["deltas"]))


def plan_jobs(args, needles: list[dict]) -> list[dict]:
    jobs = []
    if args.curve:
        for dropout in ("default", "off"):
            jobs.append({"kind": "curve", "dropout": dropout, "minutes": list(args.curve_minutes),
                         "needle_record": needles[0]})
    configs = [(b, s, True) for b in args.budgets for s in (args.scores if b is not None else ["value_norm"])]
    if args.control:
        configs.append((CONTROL_BUDGET, "value_norm", False))
    for trial in range(args.first_trial, args.first_trial + args.trials):
        plan = trial_plan(trial, needles)
        for budget, score, shown in configs:
            jobs.append({"kind": "recall", "trial": trial, "budget": budget, "score": score, "shown": shown,
                         "deltas": list(args.deltas), "plan": plan, "needle_record": needles[plan["needle"]]})
    return jobs


def run_all(args, command: str) -> None:
    from hico.records import append_record, read_records

    pixels, needles = inputs()
    done = {job_key(r) for r in read_records(args.results) if not (args.redo_curve and r["kind"] == "curve")}
    jobs = [j for j in plan_jobs(args, needles) if job_key(j) not in done]
    print(f"{len(jobs)} jobs to run ({len(done)} done before) in {args.workers} processes of {args.threads} "
          f"thread(s)", flush=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=_start_worker, initargs=(args.threads, str(pixels))) as pool:
        for count, record in enumerate(pool.imap_unordered(run_job, jobs), start=1):
            append_record(args.results, dict(record, command=command, threads=args.threads))
            if record["kind"] == "recall":
                marks = " ".join(f"{a['delta']:g}:{'+' if a['correct'] else '-'}" for a in record["answers"])
                kept = " ".join(str(a["needle_kept"]) for a in record["answers"])
                print(f"[{count}/{len(jobs)}, {time.perf_counter() - started:.0f} s] trial {record['trial']} "
                      f"budget {record['budget'] or 'none'} {record['score']}"
                      f"{'' if record['shown'] else ' (no needle)'}: {marks}, needle tokens kept {kept} "
                      f"({record['seconds']:.0f} s)", flush=True)
            else:
                print(f"[{count}/{len(jobs)}, {time.perf_counter() - started:.0f} s] curve dropout "
                      f"{record['dropout']} done ({record['seconds']:.0f} s)", flush=True)
    print(f"all jobs done in {time.perf_counter() - started:.0f} s", flush=True)


def wilson(right: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = right / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def budget_label(budget: int | None) -> str:
    return "none" if budget is None else f"{budget:,}"


def config_label(config: tuple) -> str:
    budget, score, shown = config
    if not shown:
        return f"{budget_label(budget)}, no needle shown (control)"
    return budget_label(budget) if budget is None else f"{budget_label(budget)}, {score}"


def summarize(records: list[dict]) -> dict:
    """Per config (budget, score, needle shown) and delta: the answers' correctness and the needle tokens kept."""
    recall = [r for r in records if r["kind"] == "recall"]
    cells: dict[tuple, list[bool]] = {}
    kept: dict[tuple, list[int]] = {}
    paired: dict[tuple, dict[str, bool]] = {}
    for r in recall:
        config = (r["budget"], r["score"], r["shown"])
        for a in r["answers"]:
            cells.setdefault((*config, a["delta"]), []).append(a["correct"])
            kept.setdefault((*config, a["delta"]), []).append(a["needle_kept"])
            if r["shown"] and r["budget"] is not None:
                paired.setdefault((r["budget"], r["trial"], a["delta"]), {})[r["score"]] = a["correct"]
    guessed = {(r["trial"], a["delta"]) for r in recall if not r["shown"] for a in r["answers"] if a["correct"]}
    unguessed: dict[tuple, list[bool]] = {}  # the questions that the control gets wrong
    for r in recall:
        for a in r["answers"]:
            if (r["trial"], a["delta"]) not in guessed:
                unguessed.setdefault((r["budget"], r["score"], r["shown"]), []).append(a["correct"])
    deltas = sorted({key[-1] for key in cells})
    configs = sorted({key[:3] for key in cells},
                     key=lambda c: (not c[2], c[0] is not None, -(c[0] or 0), c[1] != "value_norm"))
    duels = {}
    for budget in sorted({b for b, _, shown in configs if b is not None and shown}):
        pairs = [v for (b, _, _), v in paired.items() if b == budget and len(v) == 2]
        if pairs:
            duels[budget] = (sum(v["value_norm"] and not v["random"] for v in pairs),
                             sum(v["random"] and not v["value_norm"] for v in pairs), len(pairs))
    curves = {r["dropout"]: r for r in records if r["kind"] == "curve"}
    trials = {c: len({r["trial"] for r in recall if (r["budget"], r["score"], r["shown"]) == c}) for c in configs}
    return {"cells": cells, "kept": kept, "deltas": deltas, "configs": configs, "duels": duels, "curves": curves,
            "trials": trials, "unguessed": unguessed, "guessed": len(guessed)}


def render(summary: dict, commands: list[str]) -> str:
    deltas, cells, configs = summary["deltas"], summary["cells"], summary["configs"]
    lines = ["## Live video: streaming NIAH recall and the dropout curve (issue 25)", "",
             f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores (shared: other jobs ran beside it), "
             f"float32, torch {torch.__version__}, embedded model, 1 torch thread per process. Measured by "
             + ", then ".join(f"`{c}`" for c in commands)
             + " (how the streams are made: `bench/live_niah.py`'s docstring; the report pools every result in "
             "its results file).", ""]
    if cells:
        counts = set(summary["trials"].values())
        trials = f"{counts.pop()} trials" if len(counts) == 1 else "trials: " + "; ".join(
            f"{config_label(c)}: {n}" for c, n in summary["trials"].items())
        header = " | ".join(f"{d:g} min" for d in deltas)
        lines += ["Recall: a 1 fps stream of the held-out 4,096-frame NIAH haystack of bench/tiny_model.py, one "
                  "needle picture shown for 4 s at t = 1-5 min, its question (NIAH form, open answer, "
                  "`hico niah run --answer open` scoring) asked at t + delta in the same stream. A trial is a "
                  "needle, a t, a haystack start and a random-eviction seed; every config streams the same trials "
                  f"({trials}). The control streams the haystack alone (no needle) with a 1,024 budget: "
                  "the answers the model gets right without seeing the needle. Budgets evict the lowest-scored "
                  "older visual tokens (never the 4 newest clips) once the stream passes them: after 1.1 / 4.3 / "
                  "17.1 min of stream for 1,024 / 4,096 / 16,384 tokens.", "",
                  "Right answers / questions, by minutes from the needle to the question; then all deltas pooled "
                  "with a 95% Wilson interval, and pooled over the questions the control gets wrong (the "
                  f"{summary['guessed']} it gets right are guessable without the needle). The questions of a "
                  "trial share a stream, so the intervals are optimistic:", "",
                  f"| budget (visual tokens), score | {header} | pooled (95% CI) | not guessable (95% CI) |",
                  "|---|" + "---:|" * (len(deltas) + 2)]
        for config in configs:
            row = [cells.get((*config, d), []) for d in deltas]
            right, total = sum(sum(v) for v in row), sum(len(v) for v in row)
            fair = summary["unguessed"].get(config, []) if config[2] else []
            lines.append(f"| {config_label(config)} | " + " | ".join(f"{sum(v)}/{len(v)}" if v else "-" for v in row)
                         + f" | {_pooled(right, total)} | {_pooled(sum(fair), len(fair))} |")
        lines += ["", "Needle tokens still in the cache when asked (mean over trials, of the needle clip's 64):", "",
                  f"| budget (visual tokens), score | {header} |", "|---|" + "---:|" * len(deltas)]
        for config in (c for c in configs if c[2]):
            row = [summary["kept"].get((*config, d), []) for d in deltas]
            lines.append(f"| {config_label(config)} | " + " | ".join(f"{statistics.mean(v):.1f}" if v else "-"
                                                                        for v in row) + " |")
        if summary["duels"]:
            lines += ["", "value_norm against random on the same trial and delta (questions where exactly one is "
                      "right):", "", "| budget | value_norm right, random wrong | random right, value_norm wrong | "
                      "questions | sign test p |", "|---|---:|---:|---:|---:|"]
            for budget, (wins, losses, pairs) in summary["duels"].items():
                lines.append(f"| {budget:,} | {wins} | {losses} | {pairs} | {sign_test(wins, losses):.2g} |")
        lines += ["", "![streaming NIAH recall](live_niah.png)", ""]
    curves = summary["curves"]
    if curves:
        lines += ["Time to first token of the needle question against stream length, 1 fps, no budget (median "
                  "and fastest of up to 5 questions, fewer where they took over 30 s; dropout `off` keeps the "
                  "prefilled cache; `default` is the model's text-guided uniform0_attention schedule, so each "
                  "question prefills every visual token again), and the seconds the stream took to push up to "
                  "that point (with `default` the LLM waits for the question: only the tower runs as clips "
                  "arrive):", "",
                  "| stream | visual tokens | TTFT ms, dropout off | TTFT ms, dropout default | ingest s, off | "
                  "ingest s, default |", "|---:|---:|---:|---:|---:|---:|"]
        minutes = sorted({p["minutes"] for c in curves.values() for p in c["points"]})
        for m in minutes:
            point = {name: next((p for p in c["points"] if p["minutes"] == m), None) for name, c in curves.items()}
            kept_tokens = next(p["kept"] for p in point.values() if p)
            ttft = {n: "-" if p is None else f"{1000 * statistics.median(p['ttft_s']):,.0f} "
                       f"({1000 * min(p['ttft_s']):,.0f})" for n, p in point.items()}
            ingest = {n: "-" if p is None else f"{p['ingest_s']:,.0f}" for n, p in point.items()}
            lines.append(f"| {m:g} min | {kept_tokens:,} | {ttft.get('off', '-')} | {ttft.get('default', '-')} | "
                         f"{ingest.get('off', '-')} | {ingest.get('default', '-')} |")
    return "\n".join(lines) + "\n"


def _pooled(right: int, total: int) -> str:
    if not total:
        return "-"
    low, high = wilson(right, total)
    return f"{right}/{total} = {right / total:.0%} ({low:.0%}-{high:.0%})"


def _share(answers: list[bool] | None) -> float | None:
    return sum(answers) / len(answers) if answers else None


def draw_heatmap(summary: dict, path: Path) -> Path:
    """Delta x budget, one panel per score side by side (the no-budget and control rows are in both)."""
    import tempfile

    from PIL import Image

    from hico.niah.report import heatmap

    deltas, cells, configs = summary["deltas"], summary["cells"], summary["configs"]
    budgets = sorted({b for b, _, shown in configs if shown}, key=lambda b: (b is not None, -(b or 0)))
    panels = []
    with tempfile.TemporaryDirectory() as folder:
        for score in ("value_norm", "random"):
            rows = [(budget_label(b), (b, "value_norm" if b is None else score, True)) for b in budgets]
            rows += [("no needle", c) for c in configs if not c[2]]
            grid = [[_share(cells.get((*c, d))) for d in deltas] for _, c in rows]
            out = heatmap(grid, [f"{d:g}" for d in deltas], [label for label, _ in rows],
                          f"Live NIAH recall, eviction by {score} ({max(summary['trials'].values())} trials)",
                          "minutes from needle to question",
                          "budget", Path(folder) / f"{score}.png")
            panels.append(Image.open(out).copy())
    image = Image.new("RGB", (sum(p.width for p in panels) + 16, max(p.height for p in panels)), "white")
    image.paste(panels[0], (0, 0))
    image.paste(panels[1], (panels[0].width + 16, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def report(results: Path, write: bool) -> None:
    from hico.records import read_records

    records = read_records(results)
    summary = summarize(records)
    commands = [c.replace(" --no-doc", "") for c in dict.fromkeys(r.get("command", "?") for r in records)]
    text = render(summary, list(dict.fromkeys(commands)))
    print(text)
    if summary["cells"]:  # docs/ only with the doc, else beside the results
        print(f"heat-map: {draw_heatmap(summary, HEATMAP if write else results.with_suffix('.png'))}")
    if write:
        sys.path.insert(0, str(ROOT / "bench"))
        from ingest import write_doc

        write_doc(text, "live-niah")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--first-trial", type=int, default=0)
    parser.add_argument("--budgets", nargs="+", default=["none", "1024", "4096", "16384"],
                        help="visual-token budgets ('none': no budget)")
    parser.add_argument("--scores", nargs="+", choices=("value_norm", "random"), default=["value_norm", "random"])
    parser.add_argument("--deltas", type=float, nargs="+", default=list(DELTAS), help="minutes")
    parser.add_argument("--no-curve", dest="curve", action="store_false", help="skip the dropout curve")
    parser.add_argument("--no-control", dest="control", action="store_false",
                        help="skip the control streams (the haystack alone, no needle shown)")
    parser.add_argument("--redo-curve", action="store_true", help="measure the curve again (the report takes the last)")
    parser.add_argument("--curve-minutes", type=float, nargs="+", default=list(CURVE_MINUTES))
    parser.add_argument("--results", type=Path, default=RESULTS, help="the resumable results file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--report", action="store_true", help="only the report from the results so far")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    args.budgets = [None if b == "none" else int(b) for b in args.budgets]
    command = "python bench/live_niah.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    if not args.report:
        run_all(args, command)
    report(args.results, not args.no_doc)


if __name__ == "__main__":
    main()
