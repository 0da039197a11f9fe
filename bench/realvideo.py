"""Speed on real files: hico's decoding against FFmpeg's command line on the real-video corpus.

Measures, on the files Debian packages ship (build/realvideo, made by tests/realvideo/fetch; every kind=video row):
  decode      the whole file decoded in order, no colour conversion: hico's `probe(path, count_frames=True)` in
              this process (open, packet scan, then one decode of every frame, which also gives the rotation and
              the timestamp check) against `ffmpeg -v error -threads 2 -i FILE -map 0:v:0 -f null -`
  rgb         every frame as RGB at its original size: `Video(path, isolate=False)` (packet-table probe) and
              `frames()` of a plan listing every frame, against `... -pix_fmt rgb24 -f rawvideo -y /dev/null`
  open        hico's `probe(path)` alone (packet scan + decoding the first 24 frames for the rotation and the
              timestamp check): what `Video()` does before the rgb read
  pyav        a bare PyAV loop (`for frame in container.decode(stream)`, thread_type AUTO, as hico decodes): the
              bundled FFmpeg's decoder plus PyAV's per-frame cost, without hico's bookkeeping
Every time is the best of 3; a short file is run as many times in a row as one timing needs to last >= 0.2 s and
the time is per run; the timings of one file are interleaved round by round (hico, ffmpeg, hico, ffmpeg, ...) so
that load from other users of the machine reaches both. FFmpeg runs as one subprocess per run; its own process
start-up (an `ffmpeg -f lavfi -i nullsrc=s=16x16:d=0.04 -f null -`, timed again before every 10 files) is
subtracted and reported on its own. hico runs in this process, imports done, so no interpreter start is counted on
either side. The issue's target: a whole file decoded in order costs at most 1.2x ffmpeg with the same thread count.

Then, on long files made by looping corpus files with stream copy (bench/.cache, made on first run): 64 frames
(`SamplingOptions.plain(num_frames=64)`, size 224, open included) read with strategy auto, seek and sequential,
against decoding the whole file in order (hico decode-only and ffmpeg -f null); and the peak RSS of a fresh process
doing the auto read, beside the same process that only imports hico (VmHWM: a child's ru_maxrss keeps the parent's
peak on Linux), and the decode worker's peak when the read is isolated.

  .venv/bin/python bench/realvideo.py                  # everything (about 9 minutes), writes docs/benchmarks.md
  .venv/bin/python bench/realvideo.py --files tour.mp4 vtest.avi --no-doc
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import write_doc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "build" / "realvideo"
CACHE = ROOT / "bench" / ".cache"
RESULTS = CACHE / "realvideo.json"
THREADS = 2
MIN_SECONDS = 0.2
DIAGNOSTIC_SECONDS, DIAGNOSTIC_REPEATS = 0.05, 2  # the open and PyAV columns: explanations, timed more briefly
STARTUP_EVERY, STARTUP_SECONDS, STARTUP_REPEATS = 10, 0.5, 3  # FFmpeg's start-up: timed before every 10 files
STARTUP_BOUND = 0.01  # ffmpeg's time less its start-up below this: the ratio is start-up noise, not counted
REPEATS = 3
TARGET = 1.2
SPARSE_FRAMES = 64
SPARSE_SIZE = 224
STRATEGIES = ("auto", "seek", "sequential")
# corpus file (short name), times it is played in the long file (-stream_loop N plays it N + 1 times)
LONG_FILES = (("lesson_19_group_updates.mp4", 40), ("Megamind.avi", 12), ("history2.mkv", 60))
NULLSRC = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=16x16:d=0.04", "-f", "null", "-"]


def short_name(path: Path) -> str:
    """The file name the package ships (the corpus names flatten the installed path with '__')."""
    return path.name.rsplit("__", 1)[-1]


def calls_for(run: Callable[[], object], min_seconds: float) -> tuple[int, float, object]:
    """How many calls in a row of `run` last `min_seconds`, from one timed call (also a warm-up); that call's
    seconds and result."""
    started = time.perf_counter()
    result = run()
    first = time.perf_counter() - started
    return max(1, math.ceil(min_seconds / max(first, 1e-6))), first, result


def best_times(runs: dict[str, Callable[[], object]], min_seconds: float = MIN_SECONDS,
               repeats: int = REPEATS) -> dict[str, tuple[float, object]]:
    """Seconds per call of each of `runs` and what its last call returned: the best of `repeats` timings, each of
    enough calls in a row to last `min_seconds`. The timings are interleaved round by round (a, b, a, b, ...), so
    that a change in the load of the shared machine reaches all of them alike. A first call that alone lasts
    `min_seconds` counts as one of the timings, else it is an untimed warm-up."""
    plan, best = {}, {}
    for name, run in runs.items():
        calls, first, result = calls_for(run, min_seconds)
        plan[name] = calls
        best[name] = (first, result) if calls == 1 else (math.inf, result)
    for round_ in range(repeats):
        for name, run in runs.items():
            if plan[name] == 1 and round_ == repeats - 1:
                continue  # its first call was a timing
            started = time.perf_counter()
            for _ in range(plan[name]):
                result = run()
            best[name] = (min(best[name][0], (time.perf_counter() - started) / plan[name]), result)
    return best


def best_time(run: Callable[[], object], min_seconds: float = MIN_SECONDS, repeats: int = REPEATS) -> float:
    """Seconds per call of `run`, as `best_times` measures it."""
    return best_times({"run": run}, min_seconds, repeats)["run"][0]


def ffmpeg_command(path: Path, rgb: bool) -> list[str]:
    """The FFmpeg command line that decodes every frame of the first video stream (to RGB when `rgb`)."""
    out = ["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", "/dev/null"] if rgb else ["-f", "null", "-"]
    return ["ffmpeg", "-nostdin", "-v", "error", "-threads", str(THREADS), "-i", str(path), "-map", "0:v:0", *out]


def run_command(command: list[str]) -> None:
    subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)


def hico_decode_only(path: Path):
    """hico's decode-only pass: the probe that decodes every frame in order (as `ffprobe -count_frames`)."""
    from hico.video.metadata import probe

    return probe(path, count_frames=True)[0]


def hico_open(path: Path) -> None:
    from hico.video.metadata import probe

    probe(path)


def dense_plan(video):
    """A plan of every frame. Variable-frame-rate files are planned by time, so their dense plan is built
    directly; for the others the plain frame-count plan lists every frame."""
    from hico.video.sampling import SamplePlan, SamplingOptions

    n = video.info.num_frames
    if video.info.variable_frame_rate:
        plan = SamplePlan(indices=tuple(range(n)), duration=video.info.duration, time_msg="",
                          options=SamplingOptions())
    else:
        plan = video.plan(SamplingOptions.plain(num_frames=n))
    assert plan.indices == tuple(range(n)), f"{video.path}: the dense plan misses frames"
    return plan


def hico_rgb(path: Path) -> dict:
    """Every frame as RGB at its original size, in this process; what the decoder did."""
    from hico.video import Video

    with Video(path, isolate=False) as video:
        plan = dense_plan(video)
        got = sum(1 for _ in video.frames(plan, None))
        stats = video.report.stats
    return {"frames": got, "decoded": stats.decoded, "replaced": video.report.replaced}


def pyav_loop(path: Path) -> int:
    """A bare PyAV decode of every frame, threaded as hico's decoder is; a packet the decoder rejects is skipped,
    as FFmpeg's command line and hico do."""
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                count += len(packet.decode())
            except av.error.FFmpegError:
                continue
    return count


def pyav_threads(path: Path) -> int:
    """The thread count FFmpeg gives PyAV's decoder with thread_type AUTO (thread_count 0 = FFmpeg's choice)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                if packet.decode():
                    break
            except av.error.FFmpegError:  # a damaged packet: go on to the next, as the decoders do
                continue
        return stream.codec_context.thread_count


def corpus_row(path: Path, startup: float) -> dict:
    """All timings of one corpus file."""
    info = hico_decode_only(path)
    row = {"name": short_name(path), "codec": info.codec, "frames": info.num_frames,
           "size": f"{info.width}x{info.height}", "threads": pyav_threads(path), "startup": startup}
    timed = best_times({"decode": lambda: hico_decode_only(path),
                        "ffmpeg_decode_raw": lambda: run_command(ffmpeg_command(path, False)),
                        "rgb": lambda: hico_rgb(path),
                        "ffmpeg_rgb_raw": lambda: run_command(ffmpeg_command(path, True))})
    timed.update(best_times({"open": lambda: hico_open(path), "pyav": lambda: pyav_loop(path)},
                            DIAGNOSTIC_SECONDS, DIAGNOSTIC_REPEATS))
    row.update({name: seconds for name, (seconds, _) in timed.items()})
    row["rgb_check"] = timed["rgb"][1]
    for key in ("decode", "rgb"):
        row[f"ffmpeg_{key}"] = max(row[f"ffmpeg_{key}_raw"] - startup, 1e-4)
    return row


def ensure_long(name: str, loops: int) -> Path:
    """The long file made from corpus file `name` played `loops + 1` times (stream copy, video only)."""
    target = CACHE / f"loop{loops}_{name}"
    if target.exists():
        return target
    source = next(p for p in CORPUS.iterdir() if short_name(p) == name)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_name("partial_" + target.name)
    print(f"making {target} from {source.name}", file=sys.stderr, flush=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", str(loops), "-i", str(source),
                    "-map", "0:v:0", "-c", "copy", "-y", str(partial)], check=True)
    partial.replace(target)
    return target


def sparse_read(path: Path, strategy: str, isolate: bool = False) -> dict:
    """Open, plan 64 frames and read them at 224 x 224 with one access strategy."""
    from hico.video import SamplingOptions, Video

    with Video(path, isolate=isolate) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=SPARSE_FRAMES))
        got = sum(1 for _ in video.frames(plan, SPARSE_SIZE, strategy=strategy))
        stats = video.report.stats
        worker_kb = video.worker.worker_maxrss_kb if video.worker is not None else 0
    return {"frames": got, "decoded": stats.decoded, "seeks": stats.seeks, "strategy": stats.strategy,
            "worker_maxrss_kb": worker_kb}


def peak_rss(path: Path | None, isolate: bool = False) -> dict:
    """Peak resident memory of a fresh process that reads 64 frames (auto) of `path`, or only imports hico (None):
    its ru_maxrss, and its VmHWM, which on Linux is the one to read (ru_maxrss keeps the parent's peak across
    fork + exec, so a child of this long-running process reports at least this process's size)."""
    command = [sys.executable, __file__, "--rss", str(path) if path else "-"] + (["--isolate"] if isolate else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_child(target: str, isolate: bool) -> None:
    from hico.video import Video  # noqa: F401  (the import alone is the baseline)

    result = sparse_read(Path(target), "auto", isolate) if target != "-" else {}
    from hico.video.worker import peak_rss_kb  # VmHWM where Linux has it

    result["ru_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["maxrss_kb"] = peak_rss_kb()
    print(json.dumps(result))


def long_row(name: str, loops: int, startup: float) -> dict:
    """Sparse reads of one long file with each strategy, a whole decode in order, and the read's peak RSS."""
    from hico.video.metadata import probe

    path = ensure_long(name, loops)
    info, table = probe(path)
    row = {"name": name, "plays": loops + 1, "codec": info.codec, "frames": info.num_frames,
           "size": f"{info.width}x{info.height}", "keyframes": info.keyframes, "seekable": table.seekable,
           "mb": path.stat().st_size / 2**20, "notes": list(info.notes)}
    timed = best_times({"decode": lambda: hico_decode_only(path),
                        "ffmpeg_decode": lambda: run_command(ffmpeg_command(path, False)),
                        **{strategy: (lambda strategy=strategy: sparse_read(path, strategy))
                           for strategy in STRATEGIES}})
    row.update({name: seconds for name, (seconds, _) in timed.items()})
    row["ffmpeg_decode"] = max(row["ffmpeg_decode"] - startup, 1e-4)
    row.update({f"{strategy}_stats": timed[strategy][1] for strategy in STRATEGIES})
    row["rss"] = peak_rss(path)
    row["rss_isolated"] = peak_rss(path, isolate=True)
    return row


def corpus_files(names: list[str] | None) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from realvideo_support import realvideo_files

    files = realvideo_files(CORPUS)
    return [p for p in files if short_name(p) in names] if names else files


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def measurable(row: dict) -> bool:
    """Whether FFmpeg's time, less its process start-up, is long enough for a per-file ratio to mean anything."""
    return row["ffmpeg_decode"] >= STARTUP_BOUND


def totals(rows: list[dict]) -> dict:
    keys = ("decode", "ffmpeg_decode", "ffmpeg_decode_raw", "rgb", "ffmpeg_rgb", "ffmpeg_rgb_raw", "open", "pyav")
    return {k: sum(r[k] for r in rows) for k in keys}


def totals_line(label: str, rows: list[dict]) -> str:
    t = totals(rows)
    return (f"- {label} ({len(rows)} files, {sum(r['frames'] for r in rows):,} frames): decode hico "
            f"{t['decode']:.2f} s, ffmpeg {t['ffmpeg_decode']:.2f} s ({t['ffmpeg_decode_raw']:.2f} s with start-up): "
            f"**{ratio(t['decode'], t['ffmpeg_decode'])}x**; rgb hico {t['rgb']:.2f} s, ffmpeg {t['ffmpeg_rgb']:.2f} s "
            f"({t['ffmpeg_rgb_raw']:.2f} s): **{ratio(t['rgb'], t['ffmpeg_rgb'])}x**. Of hico's decode, the open "
            f"(`probe(path)`) is {t['open']:.2f} s; a bare PyAV loop takes {t['pyav']:.2f} s "
            f"({ratio(t['pyav'], t['ffmpeg_decode'])}x ffmpeg).")


def corpus_table(rows: list[dict]) -> list[str]:
    lines = ["| file | codec | frames | size | PyAV threads | decode hico ms | ffmpeg ms | hico/ffmpeg | open ms | "
             "PyAV ms | rgb hico ms | ffmpeg ms | hico/ffmpeg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (measurable(r), r["decode"] / r["ffmpeg_decode"]), reverse=True):
        bracket = (lambda text: text) if measurable(r) else (lambda text: f"({text})")
        lines.append(f"| {r['name']} | {r['codec']} | {r['frames']} | {r['size']} | {r['threads']} | "
                     f"{ms(r['decode'])} | {ms(r['ffmpeg_decode'])} | "
                     f"{bracket(ratio(r['decode'], r['ffmpeg_decode']))} | {ms(r['open'])} | {ms(r['pyav'])} | "
                     f"{ms(r['rgb'])} | {ms(r['ffmpeg_rgb'])} | "
                     f"{bracket(ratio(r['rgb'], r['ffmpeg_rgb']))} |")
    return lines


def long_table(results: dict) -> list[str]:
    lines = ["| file | plays | frames | size | keyframes | seekable | auto s (decoded, seeks) | seek s (decoded) | "
             "sequential s (decoded) | decode hico s | ffmpeg s | hico/ffmpeg | whole decode / auto | "
             "peak RSS MB: read / import only / worker |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results["rss_baseline"]["maxrss_kb"] / 1024
    for r in results["long"]:
        auto, seek, seq = r["auto_stats"], r["seek_stats"], r["sequential_stats"]
        lines.append(
            f"| {r['name']} | {r['plays']} | {r['frames']:,} | {r['size']} | {r['keyframes']} | "
            f"{'yes' if r['seekable'] else 'no'} | {r['auto']:.2f} ({auto['decoded']:,}, {auto['seeks']}) | "
            f"{r['seek']:.2f} ({seek['decoded']:,}) | {r['sequential']:.2f} ({seq['decoded']:,}) | {r['decode']:.2f} | "
            f"{r['ffmpeg_decode']:.2f} | {ratio(r['decode'], r['ffmpeg_decode'])} | "
            f"{r['decode'] / r['auto']:.1f}x | {r['rss']['maxrss_kb'] / 1024:.0f} / {base:.0f} / "
            f"{r['rss_isolated']['worker_maxrss_kb'] / 1024:.0f} |")
    return lines


def render(results: dict, command: str) -> str:
    rows, meta = results["corpus"], results["meta"]
    timed = [r for r in rows if measurable(r)]
    t = totals(rows)
    slow = sorted((r for r in timed if r["decode"] / r["ffmpeg_decode"] > TARGET),
                  key=lambda r: r["decode"] / r["ffmpeg_decode"], reverse=True)
    threads = sorted({r["threads"] for r in rows})
    lines = [
        "## Real files: whole-file decoding against FFmpeg, and sparse reads of long real files",
        "",
        f"Command: `{command}` (hico at commit {meta['commit']}). Date: {meta['date']}. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU (Python {platform.python_version()}, "
        f"PyAV {meta['pyav']} with its bundled FFmpeg "
        f"{meta['pyav_ffmpeg']}; Debian `ffmpeg` {meta['ffmpeg']}). Load average before {meta['load_before']}, "
        f"after {meta['load_after']} (1/5/15 min; the machine is shared). Run time {meta['seconds'] / 60:.1f} min.",
        "",
        f"Corpus: the {len(rows)} files with a video stream in build/realvideo (files Debian packages ship; "
        f"tests/realvideo/fetch). Every time is the best of {REPEATS}, a short file repeated within a timing to last "
        f">= {MIN_SECONDS} s (open and PyAV columns: best of {DIAGNOSTIC_REPEATS}, >= {DIAGNOSTIC_SECONDS} s); times "
        "are per run. FFmpeg: "
        f"`{' '.join(ffmpeg_command(Path('FILE'), False))}` (decode) and "
        f"`{' '.join(ffmpeg_command(Path('FILE'), True))}` (rgb), one subprocess per run, less FFmpeg's own "
        f"process start-up (`{' '.join(NULLSRC)}`, timed the same way before every {STARTUP_EVERY} files and each "
        f"long file: {ms(min(meta['startups']))}-{ms(max(meta['startups']))} ms). hico and ffmpeg timings of a file "
        "are interleaved round by round, so that load from other users of the machine reaches both. hico runs in "
        "this process (no interpreter start on either side): decode = `probe(path, count_frames=True)` (open, packet "
        "scan, then one decode of every frame, which also gives the rotation and the timestamp check; no RGB); "
        "rgb = `Video(path, isolate=False)` and `frames()` of a plan of every frame at original size; open = "
        "`probe(path)` alone (packet scan and a decode of the first 24 frames: what `Video()` does before the rgb "
        "read); PyAV = a bare decode loop over the packets, threaded as hico's decoder (decode - PyAV = hico's "
        "own cost). "
        f"Threads: FFmpeg `-threads {THREADS}`. hico's decoder sets thread_type AUTO and leaves thread_count at 0, "
        f"which FFmpeg turns into cores + 1 = {max(threads)} threads here for codecs that can use threads "
        "(read back from the codec context after the first frame: the PyAV threads column); so hico decodes with "
        f"one thread more than the `-threads {THREADS}` baseline (on {os.cpu_count()} cores the extra thread adds "
        "no parallelism). "
        f"Ratios in brackets: FFmpeg's time less start-up is under {ms(STARTUP_BOUND)} ms, so the ratio measures "
        "start-up noise (a 1 ms error in the start-up estimate shifts the ffmpeg total by "
        f"{len(rows)} ms); they are not counted per file.",
        "",
        "Totals:",
        "",
        totals_line("whole corpus", rows),
        totals_line(f"files where ffmpeg takes >= {ms(STARTUP_BOUND)} ms beyond start-up", timed),
        "",
        f"Target (decode a whole file in order at most {TARGET}x ffmpeg, same thread count): "
        f"**{'met' if t['decode'] / t['ffmpeg_decode'] <= TARGET else 'NOT met'}** in total "
        f"({ratio(t['decode'], t['ffmpeg_decode'])}x); missed on {len(slow)} of the {len(timed)} files with a "
        "measurable ffmpeg time" + (": " + ", ".join(f"{r['name']} ({ratio(r['decode'], r['ffmpeg_decode'])}x)"
                                                    for r in slow) if slow else "") + ".",
        "",
        *corpus_table(rows),
    ]
    if results.get("failed"):
        lines += ["", "Not timed (a reader failed): " + "; ".join(f"{f['name']} ({f['error']})"
                                                           for f in results["failed"]) + "."]
    if results.get("long"):
        front = [r for r in results["long"] if not r["seekable"]]
        lines += [
            "",
            "Sparse reads of long real files (made in bench/.cache on first run: `ffmpeg -stream_loop N -i FILE -map "
            f"0:v:0 -c copy`, the file played N + 1 times): {SPARSE_FRAMES} frames "
            f"(`SamplingOptions.plain(num_frames={SPARSE_FRAMES})`, size {SPARSE_SIZE}, in process, open and planning "
            "included) with each access strategy, against decoding the whole file in order (hico decode-only and "
            "ffmpeg as above). Decoded = frames out of the decoder. Peak RSS: the peak of a fresh process doing the "
            "auto read in process, beside the same process that only imports `hico.video.Video` (torch "
            "included), and the decode worker's own peak when the same read runs isolated (the default); read as "
            "VmHWM, because ru_maxrss of a child keeps its parent's peak across fork + exec on Linux (here it "
            f"reads {results['long'][0]['rss']['ru_maxrss_kb'] / 1024:.0f} MB, this benchmark's own size).",
            "",
            *long_table(results),
            "",
            "Read front to back by design, so no sparse advantage (every strategy decodes up to the last sample): "
            + ("; ".join(f"{r['name']} ({'; '.join(r['notes']) or 'not seekable'})" for r in front) or "none") + ".",
        ]
    return "\n".join(lines) + "\n"


def versions() -> dict:
    """The software measured: PyAV, its FFmpeg, Debian's ffmpeg, and the commit of hico (+ if src/ has changes)."""
    import av

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True)

    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split()[2]
    return {"pyav": av.__version__, "pyav_ffmpeg": av.ffmpeg_version_info, "ffmpeg": ffmpeg,
            "commit": head.stdout.strip() + ("+" if dirty.stdout.strip() else "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", help="corpus files by short name (default: every video)")
    parser.add_argument("--no-long", action="store_true", help="skip the long-file part")
    parser.add_argument("--no-doc", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    parser.add_argument("--isolate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss:
        rss_child(args.rss, args.isolate)
        return
    started = time.perf_counter()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    software = versions()  # before timing: the code this run loads
    files = corpus_files(args.files)
    logging.getLogger("hico").setLevel(logging.ERROR)  # replaced-frame warnings of damaged files: counted instead
    startups: list[float] = []
    results: dict = {"corpus": [], "long": []}
    for number, path in enumerate(files):
        if number % STARTUP_EVERY == 0:  # the load of a shared machine changes: measure it again now and then
            startups.append(best_time(lambda: run_command(NULLSRC), STARTUP_SECONDS, STARTUP_REPEATS))
            print(f"ffmpeg start-up {ms(startups[-1])} ms", flush=True)
        try:
            row = corpus_row(path, startups[-1])
        except Exception as exc:  # the corpus grows; a file that breaks a reader is reported, not fatal
            results.setdefault("failed", []).append({"name": short_name(path), "error": f"{type(exc).__name__}: {exc}"})
            print(f"{short_name(path)}: FAILED {exc}", flush=True)
            continue
        results["corpus"].append(row)
        print(f"{row['name']:>45} {row['codec']:>10} {row['frames']:5d}  decode {ms(row['decode']):>7} / "
              f"{ms(row['ffmpeg_decode']):>7} ms = {row['decode'] / row['ffmpeg_decode']:5.2f}   rgb "
              f"{ms(row['rgb']):>7} / {ms(row['ffmpeg_rgb']):>7} ms = {row['rgb'] / row['ffmpeg_rgb']:5.2f}   open "
              f"{ms(row['open']):>6}  pyav {ms(row['pyav']):>7}", flush=True)
    if not args.no_long:
        results["rss_baseline"] = peak_rss(None)
        for name, loops in LONG_FILES:
            startups.append(best_time(lambda: run_command(NULLSRC), STARTUP_SECONDS, STARTUP_REPEATS))
            row = long_row(name, loops, startups[-1])
            results["long"].append(row)
            print(json.dumps(row), flush=True)
    results["meta"] = {"date": date.today().isoformat(), "startups": startups, "load_before": load_before,
                       "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
                       "seconds": time.perf_counter() - started, **software}
    command = " ".join([".venv/bin/python bench/realvideo.py", *sys.argv[1:]])
    section = render(results, command)
    if not args.no_doc and not args.files and not args.no_long:  # a full run: its figures, and the doc
        CACHE.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
        write_doc(section, "realvideo")
    print(section)


if __name__ == "__main__":
    main()
