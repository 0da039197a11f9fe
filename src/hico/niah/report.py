"""NIAH results as people look at them: a heat-map PNG (frames x depth) and Markdown tables.

Single-hop cell = mean accuracy over the needles at that frame count and depth; "average accuracy" = mean of
the cells (the official summary). Multi-hop score per frame count = (right captions + right answers) /
(2 x samples), with the official breakdown: both right, caption only, QA only, both wrong.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hico.atomic import atomic_path, write_text_atomic
from hico.errors import OptionError
from hico.niah.build import load_benchmark
from hico.niah.run import read_results

CELL_W, CELL_H, MARGIN_L, MARGIN_T, MARGIN_B = 64, 34, 84, 46, 48


def summarize(cases: list[dict], results: list[dict]) -> dict:
    """Accuracy tables from the results of the benchmark's cases (results of other cases are ignored)."""
    known = {case["case"] for case in cases}
    results = [r for r in results if r["case"] in known]
    single: dict[tuple[int, float], list[bool]] = defaultdict(list)
    multi: dict[int, list[list[bool]]] = defaultdict(list)
    cost: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        if r["kind"] == "single":
            single[(r["frames"], r["depth"])].append(r["correct"][0])
        else:
            multi[r["frames"]].append(r["correct"])
        cost[r["frames"]].append(r)
    cells = {key: sum(v) / len(v) for key, v in single.items()}
    hops = {}
    for frames, rows in multi.items():
        both = sum(a and b for a, b in rows)
        caption = sum(a and not b for a, b in rows)
        qa = sum(b and not a for a, b in rows)
        hops[frames] = {"samples": len(rows), "both": both, "caption_only": caption, "qa_only": qa,
                        "both_wrong": len(rows) - both - caption - qa,
                        "score": sum(a + b for a, b in rows) / (2 * len(rows))}
    costs = {f: {"cases": len(rs), "seconds": sum(r["seconds"] for r in rs) / len(rs),
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                 "visual_tokens": max(r["visual_tokens"] for r in rs)} for f, rs in cost.items()}
    return {"cells": cells, "average": sum(cells.values()) / len(cells) if cells else None, "multi": hops,
            "costs": costs, "answered": len(results), "total": len(cases),
            "models": sorted({r.get("model_name", r["model"]) for r in results}),
            "dropouts": sorted({r["dropout"] for r in results})}


def report(folder: str | Path, results: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write niah-single.png / niah-multi.png (when there are such results) and niah-report.md; returns paths."""
    folder = Path(folder)
    settings, cases = load_benchmark(folder)
    if not Path(results).exists():
        raise OptionError(f"{results}: no results file; run `hico niah run {folder} --model PATH` first")
    summary = summarize(cases, read_results(results))
    if not summary["answered"]:
        raise OptionError(f"{results}: holds no results for this benchmark's cases")
    out = Path(out) if out is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if summary["cells"]:
        frames = sorted({f for f, _ in summary["cells"]})
        depths = sorted({d for _, d in summary["cells"]})
        grid = [[summary["cells"].get((f, d)) for f in frames] for d in depths]
        title = f"Single-hop NIAH: average accuracy {summary['average']:.1%}"
        written.append(heatmap(grid, [_frames_label(f) for f in frames], [f"{d:.0%}" for d in depths], title,
                               "frames", "depth", out / "niah-single.png"))
    if summary["multi"]:
        frames = sorted(summary["multi"])
        grid = [[summary["multi"][f]["score"] for f in frames]]
        written.append(heatmap(grid, [_frames_label(f) for f in frames], ["score"], "Multi-hop NIAH",
                               "frames", "", out / "niah-multi.png"))
    markdown = out / "niah-report.md"
    write_text_atomic(markdown, render_markdown(settings, summary, Path(results).name))
    written.append(markdown)
    return written


def render_markdown(settings: dict, summary: dict, results_name: str) -> str:
    hay = settings["haystack"]
    lines = ["# NIAH results", "",
             f"Mode: {settings['mode']}. Haystack: `{Path(hay['path']).name}`, one frame in {hay['step']} "
             f"({hay['unique_frames']} distinct frames). Results: `{results_name}`, {summary['answered']} of "
             f"{summary['total']} cases answered. Model: `{', '.join(summary['models'])}`; in-LLM dropout: "
             f"{', '.join(summary['dropouts'])}."]
    if hay["looped"]:
        lines.append(f"**The haystack was looped**: cases above {hay['unique_frames']} frames repeat it from "
                     "its start.")
    if summary["answered"] < summary["total"]:
        lines.append("**Partial results**: the run has not finished; cells hold the cases answered so far.")
    if summary["cells"]:
        frames = sorted({f for f, _ in summary["cells"]})
        depths = sorted({d for _, d in summary["cells"]})
        lines += ["", "## Single-hop accuracy (needle depth x haystack frames)", "",
                  "| depth | " + " | ".join(str(f) for f in frames) + " |",
                  "|---|" + "---|" * len(frames)]
        for d in depths:
            row = [summary["cells"].get((f, d)) for f in frames]
            lines.append(f"| {d:.0%} | " + " | ".join("-" if v is None else f"{v:.0%}" for v in row) + " |")
        lines += ["", f"Average accuracy (mean of the cells): **{summary['average']:.1%}**"]
    if summary["multi"]:
        lines += ["", "## Multi-hop", "", "| frames | samples | score | both right | caption only | QA only | "
                  "both wrong |", "|---|---|---|---|---|---|---|"]
        for f, row in sorted(summary["multi"].items()):
            lines.append(f"| {f} | {row['samples']} | {row['score']:.1%} | {row['both']} | {row['caption_only']} "
                         f"| {row['qa_only']} | {row['both_wrong']} |")
    lines += ["", "## Cost per case", "", "| frames | cases | visual tokens | mean seconds | peak RSS MB |",
              "|---|---|---|---|---|"]
    for f, row in sorted(summary["costs"].items()):
        lines.append(f"| {f} | {row['cases']} | {row['visual_tokens']} | {row['seconds']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def heatmap(grid: list[list[float | None]], columns: list[str], rows: list[str], title: str, x_label: str,
            y_label: str, path: Path) -> Path:
    """A red-yellow-green table image with the value in every cell (None = not run, grey)."""
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    title_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)
    width = max(MARGIN_L + CELL_W * len(columns) + 16, int(title_width) + 24)
    height = MARGIN_T + CELL_H * len(rows) + MARGIN_B
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 10), title, fill="black", font=font)
    for r, (label, values) in enumerate(zip(rows, grid)):
        top = MARGIN_T + r * CELL_H
        draw.text((MARGIN_L - 8, top + CELL_H // 2), label, fill="black", font=small, anchor="rm")
        for c, value in enumerate(values):
            left = MARGIN_L + c * CELL_W
            box = (left, top, left + CELL_W - 2, top + CELL_H - 2)
            draw.rectangle(box, fill=_colour(value))
            text = "-" if value is None else f"{value:.0%}"
            draw.text((left + CELL_W // 2 - 1, top + CELL_H // 2 - 1), text, fill="black", font=small, anchor="mm")
    bottom = MARGIN_T + CELL_H * len(rows)
    for c, label in enumerate(columns):
        draw.text((MARGIN_L + c * CELL_W + CELL_W // 2, bottom + 6), label, fill="black", font=small, anchor="mt")
    draw.text((MARGIN_L + CELL_W * len(columns) // 2, bottom + 26), x_label, fill="black", font=small, anchor="mt")
    if y_label:
        draw.text((8, MARGIN_T - 16), y_label, fill="black", font=small)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _colour(value: float | None) -> tuple[int, int, int]:
    """0 -> red, 0.5 -> yellow, 1 -> green."""
    if value is None:
        return (210, 210, 210)
    red, green = (220, 60, 60), (70, 170, 80)
    yellow = (240, 210, 70)
    low, high, t = (red, yellow, value * 2) if value < 0.5 else (yellow, green, value * 2 - 1)
    return tuple(round(a + (b - a) * t) for a, b in zip(low, high))


def _frames_label(frames: int) -> str:
    return f"{frames / 1000:g}K" if frames >= 1000 else str(frames)
