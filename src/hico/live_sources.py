"""Frames of a live source for `LiveVideo`: a file played at its real rate or as fast as it decodes, or a capture
device or network stream opened by PyAV (`av.open(source, format=..., options=...)`: v4l2 webcams, RTSP/RTMP/HLS
URLs, ...). Frames come as RGB uint8 with their time in seconds from the first frame; only frames at the target
rate are converted to RGB (a 30 fps source sampled at 1 fps converts one frame in 30)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import av
import numpy as np

from hico.errors import HicoError


def frames_of(source: str, *, fps: float | None = None, realtime: bool = False, format: str | None = None,
              options: Mapping[str, str] | None = None, stop: threading.Event | None = None
              ) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, seconds) of the source's first video stream, from its first frame; with `fps`, only the first
    frame at or after each 1/fps step; with `realtime`, each frame no earlier than its time after the start."""
    try:
        container = av.open(source, format=format, options=dict(options or {}), timeout=30)
    except (av.FFmpegError, OSError) as exc:
        raise HicoError(f"{source}: cannot open the live source ({exc}); check the path, URL or device "
                        "(and --format for a capture device)") from exc
    with container:
        if not container.streams.video:
            raise HicoError(f"{source}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first, taken, started = None, 0, time.monotonic()
        try:
            for frame in container.decode(stream):
                if stop is not None and stop.is_set():
                    return
                if frame.time is None:
                    continue
                first = frame.time if first is None else first
                t = frame.time - first
                if fps is not None and t < taken / fps - 1e-9:
                    continue
                taken += 1
                if realtime:
                    wait = started + t - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                yield frame.to_ndarray(format="rgb24"), t
        except av.FFmpegError as exc:
            raise HicoError(f"{source}: decoding stopped ({exc})") from exc
