"""Time the embedded model's recipe (`make tiny-model`) from scratch: wall minutes to the end of each step and in
all, peak RSS, the last logged training loss of each stage.

  python bench/recipe.py --work build/tiny-model-bench --out build/tiny-model-bench/model     # make tiny-model
  python bench/recipe.py --work build/tiny-model-plain --out build/tiny-model-plain/model --scenes plain --tower-steps 0

The work folder must not exist yet (a resumed run would not time the whole recipe). The report goes to
bench/.cache/recipe/report.md and report.json; `--out` gets the finished model, as `make tiny-model` installs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import datetime
from pathlib import Path

from hico.embedded.recipe import SCENES, TOWER_STEPS, make, recipe

CACHE = Path(__file__).resolve().parent / ".cache" / "recipe"


def last_loss(stage: Path) -> float | None:
    """The last logged training loss in the stage's trainer state (None when the stage logs none)."""
    states = sorted(stage.glob("checkpoint-*/trainer_state.json"))
    if not states:
        return None
    losses = [entry["loss"] for entry in json.loads(states[-1].read_text())["log_history"] if "loss" in entry]
    return float(f"{losses[-1]:.3g}") if losses else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts (smoke runs)")
    parser.add_argument("--tower-steps", type=int, default=TOWER_STEPS,
                        help="as `python -m hico.embedded --tower-steps`")
    parser.add_argument("--scenes", choices=SCENES, default="varied",
                        help="as `python -m hico.embedded --scenes`")
    args = parser.parse_args()
    if args.work.exists():
        parser.error(f"{args.work} exists; the benchmark times a run from scratch, so pass a new folder")
    started, wall = time.time(), time.perf_counter()
    make(args.out, args.work, args.scale, tower_steps=args.tower_steps, varied=args.scenes == "varied")
    total = (time.perf_counter() - wall) / 60
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    steps = ["00-tower"] * bool(args.tower_steps) + [f"{i:02d}-{step.name}" for i, step in enumerate(recipe(), 1)]
    rows = [{"step": name, "last_loss": last_loss(args.work / name),
             "done_at_min": round(((args.work / name / "model.safetensors").stat().st_mtime - started) / 60, 1)}
            for name in steps]
    result = {"date": datetime.now().isoformat(timespec="minutes"), "scale": args.scale,
              "tower_steps": args.tower_steps, "scenes": args.scenes, "machine": platform.machine(),
              "total_min": round(total, 1), "peak_rss_mb": round(peak / 1024), "steps": rows}
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "report.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Recipe of the embedded model, {result['date']}, scale {args.scale}, tower steps {args.tower_steps}, "
             f"{args.scenes} scenes",
             "",
             f"{result['total_min']} min wall in all, peak RSS {result['peak_rss_mb']} MB", "",
             "| step | done at (min) | last training loss |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['done_at_min']} | {r['last_loss'] if r['last_loss'] is not None else '-'} |"
              for r in rows]
    (CACHE / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
