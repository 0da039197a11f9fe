"""A live `hico serve` subprocess on 127.0.0.1 for the server tests (one per test module), and demo videos.

Only loopback traffic; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 180  # model load on a loaded 2-core machine; the wait ends early when the server is up or died


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int
    key: str | None
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, key: str | None = "") -> dict:
        key = self.key if key == "" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, body: bytes | dict | None = None, *, key: str | None = "",
                headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request; never raises for an HTTP error status."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        sent = {**self.headers(key), **({"Content-Type": "application/json"} if isinstance(body, dict) else {}),
                **(headers or {})}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (all labels) from /metrics."""
        status, _, body = self.request("GET", "/metrics")
        assert status == 200
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                   if re.match(rf"^{re.escape(name)}(\{{.*\}})? ", line))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)  # graceful: uvicorn finishes and the lifespan cleans up
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_server(folder: Path, *args: str, key: str | None = None) -> LiveServer:
    """`hico serve` with the embedded model on a free loopback port; returns once /health answers."""
    port = free_port()
    log = folder / f"server-{port}.log"
    env = {**os.environ, "HICO_API_KEY": key or ""}
    command = [sys.executable, "-m", "hico.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    server = LiveServer(process, port, key, log)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"hico serve exited: {log.read_text()[-2000:]}")
        try:
            if server.request("GET", "/health", timeout=5)[0] == 200:
                return server
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"hico serve did not answer within {START_SECONDS} s: {log.read_text()[-2000:]}")


@dataclass(frozen=True)
class Demo:
    path: Path
    colour: str  # of the picture, as the video writer reports it
    shape: str
    first: int  # the picture's first frame


def demo_video(path: Path, seed: int = 0, seconds: int = 96) -> Demo:
    """The embedded model's demo video (`hico sample-video --picture`): one picture (a coloured shape) among
    photos, at 1 fps."""
    from hico.synthetic.tasks import write_demo_video

    spec, first = write_demo_video(path, frames=seconds, seed=seed)
    return Demo(path, spec.colour, spec.shape, first)
