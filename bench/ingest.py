"""Ingestion benchmark: time and peak memory to deliver N preprocessed 224x224 frames from a 1-hour video.

Methods, each run in a fresh process so its peak RSS is its own:
  hico        Video(...).clips(plan, 224): probe, keyframe-aware decode in a worker, preprocessing (RSS counts both
              processes)
  decode-all  what the official `read_frames_av` does: decode every frame to RGB into a list, then index and
              preprocess the N wanted ones. On this video that list needs ~75 GB, more than the machine has, so it
              runs with a cap: frames beyond CAP_GB are decoded and converted (the time is real) but not kept, and
              the memory it would need is reported beside the measured peak.
  sequential  the ceiling: one forward decode to the last wanted frame, RGB conversion of wanted frames only,
              no resizing or normalisation.

  python bench/ingest.py                   # all methods, N = 16 64 512 1024 2048 8192, writes docs/benchmarks.md
  python bench/ingest.py --n 16 64 --methods hico
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "bench" / ".cache" / "hour_640x360_30fps.mp4"
RESULTS = ROOT / "bench" / ".cache" / "ingest.json"
DOC = ROOT / "docs" / "benchmarks.md"
SIZES = (16, 64, 512, 1024, 2048, 8192)
METHODS = ("hico", "decode-all", "sequential")
CAP_GB = 8.0


def ensure_video() -> Path:
    if VIDEO.exists():
        return VIDEO
    from hico.synthetic.videos import write_video

    VIDEO.parent.mkdir(parents=True, exist_ok=True)
    tmp = VIDEO.with_suffix(".partial.mp4")
    print(f"generating {VIDEO} (108,000 frames, about 10 minutes)", file=sys.stderr)
    write_video(tmp, 108_000, fps=30, width=640, height=360, gop=250, options={"preset": "veryfast"}, progress=True)
    tmp.replace(VIDEO)
    return VIDEO


def wanted(total: int, n: int) -> list[int]:
    from hico.video.sampling import official_frame_indices

    return official_frame_indices(n, total, "middle", 30.0, n, 1)


def run_hico(n: int) -> dict:
    from hico.video import SamplingOptions, Video

    with Video(VIDEO) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=n))
        checksum, count = 0.0, 0
        for clip in video.clips(plan, 224):
            checksum += float(clip.pixels[0, 0, 0, 0])
            count += clip.valid
        worker_kb = video.worker.worker_maxrss_kb
        stats = video.report.stats
    return {"frames": count, "worker_maxrss_kb": worker_kb, "strategy": stats.strategy, "seeks": stats.seeks,
            "decoded": stats.decoded}


def run_decode_all(n: int) -> dict:
    import av

    from hico.video.preprocess import preprocess

    kept, decoded, frame_bytes = [], 0, 0
    cap = CAP_GB * 2**30
    with av.open(str(VIDEO)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            frame_bytes = rgb.nbytes
            decoded += 1
            if (len(kept) + 1) * frame_bytes <= cap:
                kept.append(rgb)
    indices = [i for i in wanted(decoded, n) if i < len(kept)]
    pixels = preprocess([kept[i] for i in indices], 224)
    return {"frames": len(indices), "decoded": decoded, "needed_gb": decoded * frame_bytes / 2**30,
            "complete": len(kept) == decoded, "shape": list(pixels.shape)}


def run_sequential(n: int) -> dict:
    import av

    with av.open(str(VIDEO)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        targets = wanted(total, n)
        want, last = set(targets), targets[-1]
        stream.thread_type = "AUTO"
        got = 0
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                frame.to_ndarray(format="rgb24")
                got += 1
            if i >= last:
                break
    return {"frames": got, "decoded": last + 1}


def one(method: str, n: int) -> None:
    start = time.perf_counter()
    result = {"hico": run_hico, "decode-all": run_decode_all, "sequential": run_sequential}[method](n)
    result["seconds"] = time.perf_counter() - start
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


def measure(method: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", method, str(n)], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rss_mb"] = (result["maxrss_kb"] + result.get("worker_maxrss_kb", 0)) / 1024
    result.update(method=method, n=n)
    return result


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def render(results: dict, command: str) -> str:
    get = lambda m, n: results.get(f"{m}/{n}")  # noqa: E731
    video = results["video"]
    lines = [
        "## Ingestion: N preprocessed 224x224 frames from a 1-hour video",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, 2 CPU cores, 24 GiB RAM, no GPU "
        f"(Python {platform.python_version()}). Date: {date.today().isoformat()}.",
        f"Video: generated by `bench/ingest.py` (`hico.synthetic.videos`), 640x360, 30 fps, {video['frames']:,} frames, H.264 "
        f"veryfast, GOP 250 ({video['keyframes']} keyframes, {video['mb']:.0f} MB). Frames: uniformly spread "
        "(`middle` policy). Each run is a fresh process; hico's RSS adds its decode worker's peak. Cells hold "
        "the latest run of each method (kept in bench/.cache/ingest.json), so a partial rerun updates only its "
        f"columns. decode-all needs the memory in brackets for every decoded frame; it ran with a {CAP_GB:g} GB cap "
        "(frames past the cap are decoded and converted but not kept), so its time is real and its RSS is capped.",
        "",
        "| N | hico s | hico RSS MB | hico access | decode-all s | decode-all RSS MB (needed) | sequential s | "
        "sequential RSS MB | hico vs decode-all | hico / sequential |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        a, b, c = get("hico", n), get("decode-all", n), get("sequential", n)
        if not a:
            continue
        cells = [str(n), f"{a['seconds']:.1f}", f"{a['rss_mb']:.0f}", f"{a['strategy']}, {a['seeks']} seeks"]
        cells += [f"{b['seconds']:.1f}", f"{b['rss_mb']:.0f} ({b['needed_gb']:.1f} GB)"] if b else ["-", "-"]
        cells += [f"{c['seconds']:.1f}", f"{c['rss_mb']:.0f}"] if c else ["-", "-"]
        cells.append(f"{b['seconds'] / a['seconds']:.1f}x faster" if b else "-")
        cells.append(f"{a['seconds'] / c['seconds']:.2f}" if c else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets (issue 2):", ""]
    for verdict in targets(results):
        lines.append(f"- {verdict}")
    return "\n".join(lines) + "\n"


def targets(results: dict) -> list[str]:
    get = lambda m, n: results.get(f"{m}/{n}")  # noqa: E731
    out = []
    if get("hico", 1024) and get("hico", 8192):
        ratio = get("hico", 8192)["rss_mb"] / get("hico", 1024)["rss_mb"]
        out.append(f"peak RSS at 8192 frames / at 1024 frames = {ratio:.2f} (target <= 1.2): "
                   f"{'met' if ratio <= 1.2 else 'NOT met'}")
    for n in (16, 64):
        if get("hico", n) and get("decode-all", n):
            speedup = get("decode-all", n)["seconds"] / get("hico", n)["seconds"]
            out.append(f"N={n}: hico {speedup:.1f}x faster than decode-all (target >= 10x): "
                       f"{'met' if speedup >= 10 else 'NOT met'}")
    for n in (2048, 8192):
        if get("hico", n) and get("sequential", n):
            ratio = get("hico", n)["seconds"] / get("sequential", n)["seconds"]
            out.append(f"N={n}: hico takes {ratio:.2f}x the plain sequential decode (target <= 1.25x): "
                       f"{'met' if ratio <= 1.25 else 'NOT met'}")
    return out


def write_doc(section: str, name: str = "ingest") -> None:
    """Replace (or append) the named section of docs/benchmarks.md, leaving the others alone."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    marker_start, marker_end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures measured by the scripts in `bench/`.\n\n"
    block = f"{marker_start}\n{section}{marker_end}\n"
    if marker_start in text:
        head, rest = text.split(marker_start, 1)
        text = head + block + rest.split(marker_end, 1)[1].lstrip("\n")
    else:
        text += "\n" + block
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]))
        return
    from hico.video import probe

    info, _ = probe(ensure_video())
    results = load_results()
    results["video"] = {"frames": info.num_frames, "keyframes": info.keyframes, "mb": VIDEO.stat().st_size / 2**20}
    for n in args.n:
        for method in args.methods:
            result = measure(method, n)
            results[f"{method}/{n}"] = result
            RESULTS.write_text(json.dumps(results, indent=1))
            print(f"{method:>10}  N={n:<5} {result['seconds']:7.1f} s  {result['rss_mb']:7.0f} MB  "
                  f"{json.dumps({k: v for k, v in result.items() if k in ('strategy', 'seeks', 'decoded')})}",
                  flush=True)
    command = "python bench/ingest.py " + " ".join(sys.argv[1:])
    section = render(results, command.strip())
    write_doc(section)
    print(section)


if __name__ == "__main__":
    main()
