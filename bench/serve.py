"""Load test of `hico serve` on loopback: C concurrent clients, each asking R questions about one of 5 demo videos
(half of them streaming), against a server with the embedded model and a bounded queue.

Pass criteria (issue 15): every request is answered (200) or turned away (429), none gets a 5xx or fails, and
the server's RSS grows by at most 300 MB from its idle start to the run's peak. Reported: p50/p95 time to first
token (streamed requests: to the first content chunk; plain requests: to the whole answer), requests per second,
429 share, RSS. Everything stays on 127.0.0.1; every wait is bounded.

  python bench/serve.py                      # 100 clients x 2 requests, writes docs/benchmarks.md
  python bench/serve.py --clients 20 --no-doc
  python bench/serve.py --check              # exit 1 unless the pass criteria hold (tests/test_serve_load.py)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
VIDEOS = 5
QUESTION = "Describe the picture in the video."
REQUEST_TIMEOUT = 600  # seconds a client waits for one answer
RSS_LIMIT_MB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, port: int, max_queue: int) -> subprocess.Popen:
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, "-m", "hico.cli", "serve", "--port", str(port), "--allow-path",
                                str(folder), "--max-queue", str(max_queue), "--log-level", "warning"],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HICO_API_KEY": ""})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"hico serve exited: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if get(port, "/health")[0] == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("hico serve did not start within 300 s")


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def ask(port: int, video: Path, stream: bool) -> dict:
    """One chat request; returns status, seconds to the first token (or whole answer) and the answer."""
    body = json.dumps({"model": "hico-embedded", "stream": stream, "max_tokens": 16, "messages": [
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{video}"}},
                                     {"type": "text", "text": QUESTION}]}]})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    start = time.perf_counter()
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200 or not stream:
            data = response.read()
            seconds = time.perf_counter() - start
            answer = json.loads(data)["choices"][0]["message"]["content"] if response.status == 200 else ""
            return {"status": response.status, "first": seconds, "answer": answer, "stream": stream}
        first, pieces = None, []
        for line in response:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return {"status": 500, "first": None, "answer": event["error"]["message"], "stream": True}
            piece = event["choices"][0]["delta"].get("content") if event["choices"] else None
            if piece:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(piece)
        return {"status": 200, "first": first, "answer": "".join(pieces), "stream": True}
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        return {"status": 0, "first": None, "answer": f"{type(exc).__name__}: {exc}", "stream": stream}
    finally:
        connection.close()


def rss_mb(process: psutil.Process) -> float:
    """The server's RSS with its children (the decode workers it starts)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # a decode worker that just ended
    return total / 2**20


def run(clients: int, rounds: int, max_queue: int) -> dict:
    from tqdm import tqdm

    from hico.synthetic.tasks import write_demo_video

    folder = Path(tempfile.mkdtemp(prefix="hico-bench-serve-"))
    videos, expected = [], []
    for seed in range(VIDEOS):  # what `hico sample-video --picture --seconds 96 --seed S` writes
        spec, _ = write_demo_video(folder / f"v{seed}.mp4", frames=96, seed=seed)
        videos.append(folder / f"v{seed}.mp4")
        expected.append(f"{spec.colour} {spec.shape}")
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    port = free_port()
    server = start(folder, port, max_queue)
    process = psutil.Process(server.pid)
    try:
        idle = rss_mb(process)
        peak = idle
        results: list[dict] = []
        lock = threading.Lock()
        done = threading.Event()
        bar = tqdm(total=clients * rounds, desc="requests", unit="req")

        def client(k: int) -> None:
            for r in range(rounds):
                result = ask(port, videos[(k + r) % VIDEOS], stream=(k + r) % 2 == 1)
                result["video"] = (k + r) % VIDEOS
                with lock:
                    results.append(result)
                    bar.update(1)

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, rss_mb(process))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT * rounds)
        wall = time.perf_counter() - began
        done.set()
        sampler.join()
        bar.close()
        peak = max(peak, rss_mb(process))
        _status, metrics = get(port, "/metrics")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    answered = [r for r in results if r["status"] == 200]
    wrong = [r for r in answered if expected[r["video"]] not in r["answer"]]
    firsts = sorted(r["first"] for r in answered if r["first"] is not None)
    streamed = sorted(r["first"] for r in answered if r["stream"] and r["first"] is not None)
    encodes = re.search(rb"^hico_video_encodes_total (\S+)", metrics, re.MULTILINE)
    return {
        "clients": clients, "rounds": rounds, "max_queue": max_queue, "requests": len(results),
        "answered": len(answered), "rejected_429": sum(r["status"] == 429 for r in results),
        "server_errors": sum(r["status"] >= 500 for r in results), "failed": sum(r["status"] == 0 for r in results),
        "unexpected": sorted({r["status"] for r in results} - {200, 429}), "wrong_answers": len(wrong),
        "wall_s": wall, "answered_per_s": len(answered) / wall,
        "ttft_stream_p50": quantile(streamed, 0.5), "ttft_stream_p95": quantile(streamed, 0.95),
        "first_p50": quantile(firsts, 0.5), "first_p95": quantile(firsts, 0.95),
        "rss_idle_mb": idle, "rss_peak_mb": peak, "rss_growth_mb": peak - idle,
        "encodes": float(encodes.group(1)) if encodes else None,
        "errors": [r["answer"] for r in results if r["status"] not in (200, 429)][:5], "load_average": load,
    }


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def passed(result: dict) -> bool:
    return (result["requests"] == result["clients"] * result["rounds"] and not result["unexpected"]
            and result["answered"] > 0 and result["wrong_answers"] == 0
            and result["rss_growth_mb"] <= RSS_LIMIT_MB)


def section(result: dict, command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, " \
              f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, no GPU (Python {platform.python_version()})"
    seconds = lambda v: "-" if v is None else f"{v:.2f}"
    r = result
    return (
        "## Serving: 100 concurrent clients on loopback (issue 15)\n\n"
        f"Command: `{command}`. Machine: {machine}, shared (1-minute load average {r['load_average']:.1f} when "
        f"the run started). Date: {date.today().isoformat()}.\n"
        f"Server: `hico serve` with the embedded model, `--max-queue {r['max_queue']}`, one model worker. "
        f"Clients: {r['clients']} threads at once, {r['rounds']} requests each, one after the other, over "
        f"{VIDEOS} demo videos (96 s, 1 fps, 96 frames each; file:// URLs), every other request streamed, "
        "`max_tokens` 16, greedy. Time to first token: streamed requests, request sent to first content chunk "
        "(queue wait included); plain requests count the whole answer.\n\n"
        "| requests | answered (200) | turned away (429) | 5xx | failed | wrong answers | wall s | answered/s "
        "| TTFT p50 s | TTFT p95 s | first-or-whole p50 s | p95 s | RSS idle MB | RSS peak MB | growth MB "
        "| videos encoded |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {r['requests']} | {r['answered']} | {r['rejected_429']} | {r['server_errors']} | {r['failed']} "
        f"| {r['wrong_answers']} | {r['wall_s']:.1f} | {r['answered_per_s']:.2f} | {seconds(r['ttft_stream_p50'])} "
        f"| {seconds(r['ttft_stream_p95'])} | {seconds(r['first_p50'])} | {seconds(r['first_p95'])} "
        f"| {r['rss_idle_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['rss_growth_mb']:.0f} "
        f"| {'-' if r['encodes'] is None else int(r['encodes'])} |\n\n"
        f"Criteria: every request answered or 429, no 5xx: {'met' if not r['unexpected'] else 'NOT met'}; "
        f"RSS growth {r['rss_growth_mb']:.0f} MB (limit {RSS_LIMIT_MB} MB): "
        f"{'met' if r['rss_growth_mb'] <= RSS_LIMIT_MB else 'NOT met'}. Each video is encoded once and shared "
        "by every request that sends it.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="requests per client, one after the other")
    parser.add_argument("--max-queue", type=int, default=32)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the pass criteria hold")
    args = parser.parse_args()
    result = run(args.clients, args.rounds, args.max_queue)
    print(json.dumps(result, indent=1))
    if not args.no_doc:
        command = "python bench/serve.py" + "".join(
            f" --{k.replace('_', '-')} {getattr(args, k)}" for k, d in (("clients", 100), ("rounds", 2),
                                                                        ("max_queue", 32)) if getattr(args, k) != d)
        from ingest import write_doc

        write_doc(section(result, command), "serve")
        print(f"wrote {DOC}")
    if args.check and not passed(result):
        sys.exit(1)


if __name__ == "__main__":
    main()
