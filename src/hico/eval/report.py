"""summary.json and report.md of an evaluation run: official and strict numbers per task and category, the
paper's numbers beside them for the released checkpoints, and every fact that qualifies a number (skipped
videos, items scored differently by the two modes, random fallbacks, missing subtitles)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hico.eval import get_task

if TYPE_CHECKING:
    from hico.eval.runner import Plan

# VideoChat-Flash paper (arXiv 2501.00574), Qwen2-7B at 448 px: the numbers the issue asks to reproduce.
PAPER = {
    "VideoChat-Flash-Qwen2-7B_res448": {"mvbench": 74.0, "longvideobench_val_v": 64.7, "mlvu_mc": 74.7,
                                        "videomme": 65.3, "videomme_w_subtitle": 69.7, "lvbench": 48.2},
}


def paper_numbers(model_name: str) -> dict[str, float]:
    for name, numbers in PAPER.items():
        if model_name == name or model_name.endswith(name):
            return numbers
    return {}


def _percent(value: float, scale: str) -> float:
    return 100 * value if scale == "fraction" else value


def _differs(official: dict, strict: dict) -> bool:
    if "correct" in official:
        return official["correct"] != strict["correct"]
    return abs(official.get("iou", 0.0) - strict.get("iou", 0.0)) > 1e-12


def summarize(plan: Plan, results: list[dict], model_name: str) -> dict:
    paper = paper_numbers(model_name)
    summary = {"model": model_name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "video_root": str(plan.video_root), "settings": plan.options.describe(),
               "settings_text": plan.options.sentence(), "tasks": {}}
    for name in plan.names:
        task = get_task(name)
        members = set(task.members) or {name}
        mine = [r for r in results if r["task"] in members]
        scored = [r for r in mine if r["status"] == "ok"]
        entry = {"items": len(mine), "scored": len(scored), "skipped": len(mine) - len(scored),
                 "scale": task.settings.scale, "notes": plan.notes.get(name, [])}
        for mode in ("official", "strict"):
            entry[mode] = task.aggregate([r["score"][mode] for r in scored], mode) if scored else None
        entry["differ"] = sum(_differs(r["score"]["official"], r["score"]["strict"]) for r in scored)
        entry["random_fallbacks"] = sum(r["score"]["official"].get("random_fallback", False) for r in scored)
        entry["paper"] = paper.get(name)
        summary["tasks"][name] = entry
    return json.loads(json.dumps(summary))  # as summary.json holds it (integer keys become strings)


def _cell(value: float | None, scale: str) -> str:
    return "-" if value is None else f"{_percent(value, scale):.2f}"


def write_report(summary: dict, path: str | Path) -> Path:
    lines = [f"# hico eval: {summary['model']}", "",
             f"{summary['date']}; videos under `{summary['video_root']}`; {summary['settings_text']}.", "",
             "Numbers in percent (LongVideoBench and Perception Test are fractions in the official output; shown "
             "x100 here). Official = the official parsers and aggregation, quirks included; strict = the letter "
             "or interval the answer states, empty answers counted wrong.", "",
             "| task | items | scored | skipped | official | strict | items scored differently | paper |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in summary["tasks"].items():
        scale = entry["scale"]
        official = entry["official"]["overall"] if entry["official"] else None
        strict = entry["strict"]["overall"] if entry["strict"] else None
        paper = "-" if entry["paper"] is None else f"{entry['paper']:.1f}"
        lines.append(f"| {name} | {entry['items']} | {entry['scored']} | {entry['skipped']} | {_cell(official, scale)} "
                     f"| {_cell(strict, scale)} | {entry['differ']} | {paper} |")
    for name, entry in summary["tasks"].items():
        notes = list(entry["notes"])
        if entry["skipped"]:
            notes.append(f"{entry['skipped']} items skipped (missing or unreadable video): not scored, not counted "
                         "as wrong")
        if entry["random_fallbacks"]:
            notes.append(f"{entry['random_fallbacks']} items scored by the official random fallback (seeded)")
        if entry["official"] and entry["official"].get("unparsed"):
            notes.append(f"{entry['official']['unparsed']} answers gave no interval (official dummy interval)")
        categories = entry["official"]["per_category"] if entry["official"] else {}
        recall = bool(entry["official"]) and "R@0.3" in entry["official"]
        if not categories and not notes and not recall:
            continue
        lines += ["", f"## {name}", ""]
        if recall:
            o, s = entry["official"], entry["strict"]
            lines += ["| metric | official | strict |", "|---|---:|---:|"]
            lines += [f"| {m} | {o[m]:.2f} | {s[m]:.2f} |" for m in ("R@0.3", "R@0.5", "R@0.7", "mIoU")]
        if categories:
            strict = entry["strict"]["per_category"]
            lines += ["| category | official | strict |", "|---|---:|---:|"]
            sub_scale = "percent" if get_task(name).members else entry["scale"]
            lines += [f"| {c} | {_cell(v, sub_scale)} | {_cell(strict.get(c), sub_scale)} |"
                      for c, v in categories.items()]
        lines += [""] + [f"- {note}" for note in notes]
    path = Path(path)
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
