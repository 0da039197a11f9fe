"""Build a NIAH grid: frame counts x needle depths (single-hop) and frame counts (multi-hop).

A case with N haystack frames holds N + 4 * images frames: each needle image fills one whole 4-frame clip,
inserted (not overwriting) at a clip boundary of the haystack.
- single-hop at depth d: before haystack frame `4 * floor(int(d * N) / 4)` (d = 1 puts it at the end);
- multi-hop with n images, in list order: the first before frame 0, then a segment of N / (n - 1) frames
  (rounded down to whole clips) before each next one, the last after the whole haystack (the official layout).

The haystack is read as the official NIAH reads it: every round(fps / haystack_fps)-th frame from the start.
A haystack with fewer such frames than a case asks for is an error unless `loop` is set, which repeats it
from its start (and the report says so).

Outputs, in a new folder: `niah.json` (settings, haystack identity, needle files) and `cases.jsonl` (one case
a line). Video mode also writes `videos/<case>.mp4` at `haystack_fps`, where sampling every frame gives the
exact sequence; embedding mode leaves the encoding to `hico niah run`, which caches the haystack tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from hico.atomic import atomic_path, write_text_atomic
from hico.clips import FRAMES_PER_CLIP as CLIP  # frames a needle image fills: one clip of the video encoder
from hico.errors import OptionError
from hico.memory import file_digest
from hico.niah.records import Needle
from hico.video.preprocess import read_image, resize_frame
from hico.video.reader import Video
from hico.video.sampling import SamplePlan, SamplingOptions, time_message

MODES = ("embedding", "video")
DEFAULT_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GridOptions:
    frames: tuple[int, ...]  # haystack frames per case, multiples of 4
    depths: tuple[float, ...] = DEFAULT_DEPTHS  # single-hop needle depths in [0, 1]
    mode: str = "embedding"
    haystack_fps: float = 1.0  # frames per second taken from the haystack video
    loop: bool = False  # repeat a too-short haystack instead of failing
    video_size: int = 448  # video mode: square frame side of the written videos

    def __post_init__(self) -> None:
        if not self.frames:
            raise OptionError("give at least one haystack frame count")
        bad = [n for n in self.frames if n < CLIP or n % CLIP]
        if bad:
            raise OptionError(f"frame counts must be positive multiples of {CLIP} (whole clips), got {bad}")
        if not self.depths or any(not 0 <= d <= 1 for d in self.depths):
            raise OptionError(f"depths are fractions of the haystack in [0, 1], got {list(self.depths)}")
        if self.mode not in MODES:
            raise OptionError(f"unknown mode {self.mode!r}: use embedding or video")
        if not (self.haystack_fps > 0 and math.isfinite(self.haystack_fps)):
            raise OptionError(f"haystack fps must be a positive number, got {self.haystack_fps}")
        if self.video_size < 16 or self.video_size % 2:
            raise OptionError(f"video size must be an even number of pixels >= 16, got {self.video_size}")


def clip_floor(frames: int) -> int:
    return frames // CLIP * CLIP


def insert_offsets(kind: str, frames: int, depth: float, images: int) -> list[int]:
    """Haystack frame before which each needle image goes (ascending; `frames` means after the end)."""
    if kind == "single":
        return [clip_floor(int(depth * frames))]
    segment = clip_floor(frames // (images - 1))
    return [k * segment for k in range(images - 1)] + [frames]


def needle_positions(offsets: Sequence[int]) -> list[int]:
    """First frame of each needle clip in the assembled sequence (earlier needles shift later ones)."""
    return [offset + CLIP * k for k, offset in enumerate(offsets)]


def haystack_step(video_fps: float, haystack_fps: float) -> int:
    return max(1, round(video_fps / haystack_fps))


def plan_cases(needles: Sequence[Needle], grid: GridOptions) -> list[dict]:
    cases = []
    for frames in grid.frames:
        for needle in needles:
            depths = tuple(float(d) for d in grid.depths) if needle.kind == "single" else (None,)
            for depth in depths:
                offsets = insert_offsets(needle.kind, frames, depth or 0.0, len(needle.images))
                name = f"{needle.kind}-f{frames:05d}" + (f"-d{depth:.2f}" if depth is not None else "")
                cases.append({
                    "case": f"{name}-n{needle.id}", "kind": needle.kind, "frames": frames, "depth": depth,
                    "needle": needle.id, "images": list(needle.images), "offsets": offsets,
                    "needle_frames": needle_positions(offsets), "total_frames": frames + CLIP * len(needle.images),
                    "questions": list(needle.questions), "answers": list(needle.answers),
                })
    return cases


def build(out: str | Path, haystack: str | Path, needles: Sequence[Needle], grid: GridOptions, *,
          needle_files: Sequence[str] = (), progress: bool = True) -> Path:
    """Write a benchmark folder; returns its path. `out` must be new or empty: nothing is overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError(f"{out} already exists and is not an empty folder; choose a new --out (nothing was "
                          "written)")
    if not needles:
        raise OptionError("no needle records were given")
    cases = plan_cases(needles, grid)
    with Video(haystack) as video:
        step = haystack_step(video.info.fps, grid.haystack_fps)
        unique = -(-video.info.num_frames // step)
        needed = max(grid.frames)
        if needed > unique and not grid.loop:
            raise OptionError(
                f"{haystack}: the haystack gives only {unique} frames at {grid.haystack_fps:g} fps "
                f"({video.info.num_frames} frames at {video.info.fps:g} fps), but the grid asks for {needed}; use a "
                "longer video, smaller --frames, a higher --haystack-fps, or --loop to repeat it (the report says so)")
        settings = {
            "version": FORMAT_VERSION, "mode": grid.mode, "grid": asdict(grid),
            "haystack": {"path": str(Path(haystack).resolve()), "digest": file_digest(haystack),
                         "fps": video.info.fps, "step": step, "unique_frames": unique,
                         "looped": needed > unique},
            "needle_files": [str(Path(f).resolve()) for f in needle_files],
            "cases": len(cases),
        }
        out.mkdir(parents=True, exist_ok=True)
        if grid.mode == "video":
            _write_videos(out, video, cases, step, unique, grid, progress)
    # niah.json last: a folder with it holds every case (each file lands whole)
    write_text_atomic(out / "cases.jsonl", "".join(json.dumps(case) + "\n" for case in cases))
    write_text_atomic(out / "niah.json", json.dumps(settings, indent=1) + "\n")
    return out


def load_benchmark(folder: str | Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    if not (folder / "niah.json").is_file() or not (folder / "cases.jsonl").is_file():
        raise OptionError(f"{folder}: not a NIAH benchmark folder (no niah.json / cases.jsonl); make one with "
                          "`hico niah build`")
    settings = json.loads((folder / "niah.json").read_text(encoding="utf-8"))
    if settings.get("version") != FORMAT_VERSION:
        raise OptionError(f"{folder}: benchmark format version {settings.get('version')} is not "
                          f"{FORMAT_VERSION}; rebuild it with this hico")
    cases = [json.loads(line) for line in (folder / "cases.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return settings, cases


def haystack_indices(step: int, unique: int, frames: int) -> list[int]:
    """Video frame indices of the first `frames` haystack frames, repeating from the start past `unique`."""
    return [(i % unique) * step for i in range(frames)]


def haystack_plan(video, indices: Sequence[int]) -> SamplePlan:
    """A plan that reads exactly these frame indices (the NIAH haystack, not a sampling policy)."""
    return SamplePlan(tuple(indices), video.info.duration, time_message(video.info.duration, len(indices)),
                      SamplingOptions.plain(num_frames=len(indices)))


def assembled_frames(video, case: dict, step: int, unique: int, size: int) -> Iterator[np.ndarray]:
    """The case's frames in order, `size` x `size` uint8: haystack frames with the needle clips inserted."""
    needles = [resize_frame(read_image(path), size) for path in case["images"]]
    pending = list(zip(case["offsets"], needles))
    for position, frame in enumerate(_haystack_frames(video, step, unique, case["frames"], size)):
        while pending and pending[0][0] == position:
            yield from [pending.pop(0)[1]] * CLIP
        yield frame
    for _, needle in pending:
        yield from [needle] * CLIP


def _haystack_frames(video, step: int, unique: int, frames: int, size: int) -> Iterator[np.ndarray]:
    done = 0
    while done < frames:
        count = min(unique, frames - done)
        for sampled in video.frames(haystack_plan(video, [i * step for i in range(count)]), size):
            yield sampled.pixels
        done += count


def _write_videos(out: Path, video, cases: list[dict], step: int, unique: int, grid: GridOptions,
                  progress: bool) -> None:
    folder = out / "videos"
    folder.mkdir()
    rate = Fraction(grid.haystack_fps).limit_denominator(1001)
    for case in tqdm(cases, desc="videos written", unit="video", disable=not progress):
        path = folder / f"{case['case']}.mp4"
        with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = stream.height = grid.video_size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for i, frame in enumerate(assembled_frames(video, case, step, unique, grid.video_size)):
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                picture.pts, picture.time_base = i, 1 / rate
                container.mux(stream.encode(picture))
            container.mux(stream.encode(None))
        case["video"] = str(path.relative_to(out))
