"""Decoding in a separate process, so a file that hangs or crashes FFmpeg cannot hang or crash the caller.

The parent starts `python -m hico.video.worker FD [NICE]`, sends JSON requests on the worker's stdin and reads
replies from pipe FD: a 4-byte length, a JSON header, then `header["nbytes"]` bytes of frame data. The
worker reports progress while it works; if nothing arrives for `timeout` seconds the parent kills it.
Frames flow through the OS pipe, which blocks the worker while the parent is busy: memory stays bounded.
"""

from __future__ import annotations

import json
import os
import resource
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from fractions import Fraction

import numpy as np

from hico import errors
from hico.errors import CorruptVideoError, DecodeTimeoutError, VideoError
from hico.video.decode import DecodedFrame, DecodeStats, decode_file
from hico.video.metadata import FrameTable, VideoInfo, probe

_LEN = struct.Struct("<I")
PROGRESS_EVERY_S = 1.0
PIPE_BYTES = 1 << 20  # bigger OS pipe: a few preprocessed frames in flight
FILES_PER_PROCESS = 256  # a worker kept across files is replaced after this many, bounding what FFmpeg leaks


def _send(fd: int, header: dict, payload: bytes | memoryview = b"") -> None:
    header = dict(header, nbytes=len(payload))
    raw = json.dumps(header).encode()
    _write_all(fd, _LEN.pack(len(raw)) + raw)
    if payload:
        _write_all(fd, payload)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _table_to_wire(table: FrameTable) -> tuple[dict, bytes]:
    pts = table.pts if table.pts is not None else np.zeros(0, np.int64)
    header = {"n": table.num_frames, "k": len(table.keyframes), "p": len(pts), "seekable": table.seekable,
              "tb": [table.time_base.numerator, table.time_base.denominator]}
    payload = table.times.astype(np.float64).tobytes() + table.keyframes.astype(np.int64).tobytes() + \
        pts.astype(np.int64).tobytes()
    return header, payload


def _table_from_wire(header: dict, payload: bytes) -> FrameTable:
    n, k, p = header["n"], header["k"], header["p"]
    times = np.frombuffer(payload, np.float64, n, 0)
    keys = np.frombuffer(payload, np.int64, k, 8 * n)
    pts = np.frombuffer(payload, np.int64, p, 8 * (n + k)) if p else None
    return FrameTable(times=times, keyframes=keys, pts=pts, time_base=Fraction(*header["tb"]),
                      seekable=header["seekable"])


def serve(out_fd: int) -> None:
    """Worker main loop: one JSON request per stdin line."""
    table: FrameTable | None = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "probe":
                info, table = probe(request["path"], on_progress=_heartbeat(out_fd),
                                    count_frames=request.get("count_frames", False))
                header, payload = _table_to_wire(table)
                _send(out_fd, {"type": "info", "info": asdict(info), "table": header}, payload)
            elif request["op"] == "decode":
                _serve_decode(out_fd, request, table)
        except VideoError as exc:
            _send(out_fd, {"type": "error", "class": type(exc).__name__, "path": exc.path,
                           "problem": exc.problem, "advice": exc.advice})
        except Exception as exc:  # reported to the parent, which raises it as a VideoError
            _send(out_fd, {"type": "error", "class": "CorruptVideoError", "path": request.get("path", ""),
                           "problem": f"decoding failed ({type(exc).__name__}: {exc})",
                           "advice": "The file may be damaged; try re-encoding it"})


def _heartbeat(out_fd: int):
    """A progress callback that tells the parent, at most once per PROGRESS_EVERY_S, that work goes on."""
    last = time.monotonic()

    def beat(_progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last > PROGRESS_EVERY_S:
            last = now
            _send(out_fd, {"type": "progress"})

    return beat


def _serve_decode(out_fd: int, request: dict, table: FrameTable) -> None:
    stats = DecodeStats()
    for item in decode_file(request["path"], table, request["targets"], size=request["size"],
                            autorotate=request["autorotate"], strategy=request["strategy"], stats=stats,
                            on_progress=_heartbeat(out_fd)):
        if item.pixels is None:
            _send(out_fd, {"type": "frame", "index": item.index, "reason": item.reason})
        else:
            _send(out_fd, {"type": "frame", "index": item.index, "shape": list(item.pixels.shape),
                           "concealed": item.concealed}, item.pixels.tobytes())
    done = asdict(stats)
    done["maxrss_kb"] = peak_rss_kb()
    _send(out_fd, {"type": "done", "stats": done})


def peak_rss_kb() -> int:
    """This process's peak resident memory. On Linux `ru_maxrss` keeps the parent's peak across fork + exec,
    so the per-address-space high-water mark (VmHWM) is read instead where it exists."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class WorkerClient:
    """The parent's handle on one worker process (started lazily, restarted after a kill).

    One client may read many files in turn (`open`): the process is kept between them, so a run over many
    short videos does not pay an interpreter start per video. A timeout, crash or decode error kills the
    process; the next request starts a fresh one. `nice` (0-19) lowers the process's CPU priority, for
    decoding ahead in the background: it then takes only the CPU time the caller leaves idle.
    """

    def __init__(self, path: str = "", timeout: float = 30.0, nice: int = 0) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be in 0..19, got {nice}")
        self.path = path
        self.count_frames = False
        self.timeout = timeout
        self.nice = nice
        self.proc: subprocess.Popen | None = None
        self.fd: int | None = None
        self.worker_maxrss_kb = 0
        self.files = 0  # files opened in the current process
        self.busy = False  # a decode reply is still streaming

    def open(self, path: str, count_frames: bool = False) -> tuple[VideoInfo, FrameTable]:
        """Switch to another file and probe it: same process, unless it has served FILES_PER_PROCESS files or a
        decode was left unfinished (its remaining frames would be in the pipe). `count_frames` decodes every
        frame to count them (see `probe`)."""
        if self.busy or self.files >= FILES_PER_PROCESS:
            self.close()
        self.path = str(path)
        self.count_frames = count_frames
        return self.probe()

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (ImportError, AttributeError, OSError):
            pass  # a smaller pipe only costs throughput
        self.proc = subprocess.Popen([sys.executable, "-m", "hico.video.worker", str(write_fd), str(self.nice)],
                                     stdin=subprocess.PIPE, pass_fds=(write_fd,), text=True)
        os.close(write_fd)
        self.fd = read_fd
        self.files = 0

    def close(self) -> None:
        self.busy = False
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _request(self, request: dict) -> None:
        if self.proc is None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError: the worker died while idle (killed, out of memory)
            self._died()

    def _died(self) -> None:
        """Raise the error for a worker process that is gone, with its exit status."""
        code = None
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # its buffer cannot be flushed into the dead process
            try:
                code = self.proc.wait(timeout=2)  # the pipe closes as it exits: reap it to learn the status
            except subprocess.TimeoutExpired:
                pass
        self.close()
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        raise CorruptVideoError(self.path, f"the decoder process {how} while reading it",
                                "If nothing else stopped it, FFmpeg crashed on this file: re-encode it or check "
                                "that it is intact")

    def _receive(self) -> tuple[dict, bytes]:
        header = json.loads(self._read(_LEN.unpack(self._read(_LEN.size))[0]))
        payload = self._read(header["nbytes"]) if header["nbytes"] else b""
        if header["type"] == "error":
            self.close()
            raise getattr(errors, header["class"])(header["path"], header["problem"], header["advice"])
        return header, payload

    def _read(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            ready, _, _ = select.select([self.fd], [], [], self.timeout)
            if not ready:
                self.close()
                raise DecodeTimeoutError(self.path, f"the decoder made no progress for {self.timeout:g} s",
                                         "The file may be damaged or use a stream FFmpeg cannot finish; "
                                         "re-encode it or raise the decode timeout")
            chunk = os.read(self.fd, min(n - got, 1 << 20))
            if not chunk:
                self._died()
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def probe(self) -> tuple[VideoInfo, FrameTable]:
        self._request({"op": "probe", "path": self.path, "count_frames": self.count_frames})
        self.files += 1
        header, payload = self._receive()
        while header["type"] == "progress":
            header, payload = self._receive()
        info = header["info"]
        info["notes"] = tuple(info["notes"])
        return VideoInfo(**info), _table_from_wire(header["table"], payload)

    def decode(self, targets: list[int], size: int | None, autorotate: bool, strategy: str,
               stats: DecodeStats) -> Iterator[DecodedFrame]:
        """Frames from the worker. Abandoning the iterator early kills the worker (it restarts on demand); an
        abandoned iterator resumed after the worker moved on raises instead of reading another file's frames."""
        if self.busy:  # an earlier read of this worker was left unfinished: its frames are still in the pipe
            self.close()
        if self.proc is None:
            self.probe()
        self._request({"op": "decode", "path": self.path, "targets": targets, "size": size,
                       "autorotate": autorotate, "strategy": strategy})
        self.busy = True
        proc, finished = self.proc, False
        try:
            while True:
                header, payload = self._receive()
                if header["type"] == "frame":
                    pixels = None
                    if "shape" in header:
                        pixels = np.frombuffer(payload, np.uint8).reshape(header["shape"])
                    yield DecodedFrame(header["index"], pixels, header.get("reason", ""), header.get("concealed", False))
                    if self.proc is not proc:
                        raise RuntimeError(f"{self.path}: this read was abandoned (the worker was closed or moved "
                                           "on to another file); start a new read")
                elif header["type"] == "done":
                    self.worker_maxrss_kb = header["stats"].pop("maxrss_kb")
                    for key, value in header["stats"].items():
                        setattr(stats, key, value)
                    self.busy = False
                    finished = True
                    return
        finally:
            if not finished and self.proc is proc:  # an abandoned read's frames would still be in the pipe
                self.close()

if __name__ == "__main__":
    if len(sys.argv) > 2:
        os.nice(int(sys.argv[2]))
    serve(int(sys.argv[1]))
