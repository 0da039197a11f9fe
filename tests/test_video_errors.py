"""Every way a video input or an option can be unusable: the typed error, a message that names the input and
says what to do, and (through the CLI) one line on stderr with exit status 2."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import hico.video.metadata as metadata_module
import hico.video.reader as reader_module
from conftest import BITS, FPS, HEIGHT, LONG_FRAMES, WIDTH
from hico.synthetic import videos
from hico.cli import main
from hico.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    HicoError,
    NoDecodableFramesError,
    NotAMediaFileError,
    NoVideoStreamError,
    OptionError,
    VideoError,
    VideoNotFoundError,
    VideoPermissionError,
)
from hico.video.decode import DecodeStats
from hico.video.metadata import open_error, probe
from hico.video.reader import Video
from hico.video.sampling import SamplingOptions, plan_samples
from hico.video.worker import WorkerClient

SOURCE_FRAMES, SOURCE_GOP = 120, 30

MODES = ["probe", "in-process", "worker"]


def open_with(mode: str, path: Path, **kwargs):
    """Open `path` the three ways a user can: `probe`, `Video(isolate=False)`, `Video(isolate=True)`."""
    if mode == "probe":
        return probe(path)
    with Video(path, isolate=mode == "worker", **kwargs) as video:
        return video.info


def assert_actionable(exc: VideoError, path: Path, *phrases: str) -> None:
    """The message names the input, states the problem and ends with advice containing `phrases`."""
    message = str(exc)
    assert exc.path == str(path)
    assert message.startswith(f"{path}: ")
    assert exc.problem and exc.problem in message
    assert exc.advice and message.endswith(exc.advice)
    for phrase in phrases:
        assert phrase.lower() in message.lower(), (phrase, message)
    assert "\n" not in message


# --- inputs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("broken")


@pytest.fixture(scope="module")
def plain_mp4(broken: Path) -> Path:
    """An ordinary mp4: the index (moov) is written after the frame data (mdat)."""
    path = videos.write_video(broken / "plain.mp4", SOURCE_FRAMES, width=WIDTH, height=HEIGHT, bits=BITS,
                             gop=SOURCE_GOP)
    data = path.read_bytes()
    assert 0 < data.find(b"mdat") < data.find(b"moov")
    return path


@pytest.fixture(scope="module")
def faststart_mp4(broken: Path) -> Path:
    """The index first (`movflags=+faststart`): a truncated copy still has its frame table."""
    path = videos.write_video(broken / "faststart.mp4", SOURCE_FRAMES, fps=FPS, width=WIDTH, height=HEIGHT,
                             bits=BITS, gop=SOURCE_GOP, container_options={"movflags": "+faststart"})
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")
    return path


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def corrupt_mp4(broken: Path, plain_mp4: Path) -> Path:
    """300 bytes of noise in the middle of the frame data; the index stays intact."""
    data = bytearray(plain_mp4.read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    middle = (start + end) // 2
    data[middle:middle + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    path = broken / "corrupt.mp4"
    path.write_bytes(bytes(data))
    return path


# --- missing, unreadable, not media -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_missing_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "no_such_video.mp4"
    with pytest.raises(VideoNotFoundError) as caught:
        open_with(mode, path)
    assert isinstance(caught.value, FileNotFoundError)  # callers catching the builtin still work
    assert_actionable(caught.value, path, "no such file", "check the path")


def test_open_error_maps_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.mp4"
    for exc in (PermissionError(13, "x"), OSError(errno.EPERM, "not permitted")):
        error = open_error(path, exc)
        assert type(error) is VideoPermissionError
        assert isinstance(error, PermissionError)
        assert_actionable(error, path, "permission denied", "chmod")
    assert type(open_error(path, FileNotFoundError(errno.ENOENT, "gone"))) is VideoNotFoundError
    assert type(open_error(path, av.error.InvalidDataError(errno.EINVAL, "bad"))) is NotAMediaFileError


@pytest.mark.parametrize("mode", ["probe", "in-process"])
def test_unreadable_file(monkeypatch: pytest.MonkeyPatch, plain_mp4: Path, mode: str) -> None:
    # the tests run as root, for whom chmod 000 changes nothing: make the access check say no instead
    real_access = os.access
    monkeypatch.setattr(metadata_module.os, "access",
                        lambda p, m, *a, **k: False if Path(p) == plain_mp4 else real_access(p, m, *a, **k))
    with pytest.raises(VideoPermissionError) as caught:
        open_with(mode, plain_mp4)
    assert_actionable(caught.value, plain_mp4, "permission denied", "readable")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("content, phrases", [
    (np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
     ("not a media file", "complete video file")),
    (b"", ("is empty (0 bytes)", "complete copy")),
], ids=["random-bytes", "empty"])
def test_not_a_video(tmp_path: Path, mode: str, content: bytes, phrases: tuple[str, str]) -> None:
    path = tmp_path / "input.mp4"
    path.write_bytes(content)
    with pytest.raises(NotAMediaFileError) as caught:
        open_with(mode, path)
    assert_actionable(caught.value, path, *phrases)


@pytest.mark.parametrize("mode", MODES)
def test_audio_only_file(audio_only: Path, mode: str) -> None:
    with pytest.raises(NoVideoStreamError) as caught:
        open_with(mode, audio_only)
    assert_actionable(caught.value, audio_only, "no video stream", "audio", "contains video")


def test_folder_without_numbered_frames(tmp_path: Path) -> None:
    folder = tmp_path / "not_frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("1 2 3")  # a number, but not an image
    (folder / "cover.png").write_bytes(b"")  # an image, but no number
    (folder / "clip_7.mp4").write_bytes(b"")  # a number, but a video suffix
    for mode in ("probe", "in-process", "worker"):  # folders are never sent to a worker
        with pytest.raises(NotAMediaFileError) as caught:
            open_with(mode, folder)
        assert_actionable(caught.value, folder, "without numbered frames", "frame number")


def test_frame_folder_with_broken_images(tmp_path: Path) -> None:
    folder = videos.write_frame_folder(tmp_path / "frames", 5, width=WIDTH, height=HEIGHT, bits=BITS)
    (folder / "img_3.png").write_bytes(b"not a png")  # frame 2
    with Video(folder, max_replaced=1.0) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=5))
        frames = list(video.frames(plan))
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.replaced_by for f in frames] == [None, None, 1, None, None]
    assert [videos.read_frame_code(f.pixels, BITS) for f in frames] == [0, 1, 1, 3, 4]
    assert video.report.replaced == 1
    with Video(folder, max_replaced=0.0) as video, pytest.raises(CorruptVideoError) as caught:
        list(video.frames(video.plan(SamplingOptions.plain(num_frames=5))))
    assert_actionable(caught.value, folder, "1 of 5 sampled frames", "allow more replaced samples")
    (folder / "img_1.png").write_bytes(b"")  # now the first frame, which sets the size, is broken too
    with pytest.raises(NoDecodableFramesError) as caught:
        probe(folder)
    assert_actionable(caught.value, folder, "img_1.png", "replace or remove")


# --- truncated and damaged files ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_truncated_mp4_without_its_index(broken: Path, plain_mp4: Path, mode: str) -> None:
    path = _cut(plain_mp4, broken / "plain_half.mp4", 0.5)  # the index was at the end: cut off
    with pytest.raises(NotAMediaFileError) as caught:
        open_with(mode, path)
    assert_actionable(caught.value, path, "truncated")


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_truncated_faststart_mp4_reads_what_survives(broken: Path, faststart_mp4: Path, isolate: bool) -> None:
    path = _cut(faststart_mp4, broken / f"faststart_half_{isolate}.mp4", 0.5)
    info, table = probe(path)
    assert 0 < info.num_frames < SOURCE_FRAMES  # counted from the packets that are really there
    assert info.frame_count == "counted"
    assert any("truncated" in note and str(SOURCE_FRAMES) in note for note in info.notes)

    with Video(path, isolate=isolate, max_replaced=1.0) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=info.num_frames))  # every surviving frame
        frames = list(video.frames(plan))
        report = video.report
    assert [f.position for f in frames] == list(range(plan.num_frames))
    assert [f.index for f in frames] == list(plan.indices)
    replaced = [f for f in frames if f.replaced_by is not None]
    assert report.replaced == len(replaced) <= 5
    for frame in frames:  # each frame is either its own, or visibly the neighbour it was replaced by
        shown = frame.index if frame.replaced_by is None else frame.replaced_by
        assert videos.read_frame_code(frame.pixels, BITS) == shown
    assert len(table.times) == info.num_frames

    with Video(path, isolate=isolate, max_replaced=0.0) as video:
        strict = video.plan(SamplingOptions.plain(num_frames=info.num_frames))
        if report.replaced:
            with pytest.raises(CorruptVideoError) as caught:
                list(video.frames(strict))
            assert_actionable(caught.value, path, "could not be decoded", "allow more replaced samples")
        else:
            assert len(list(video.frames(strict))) == info.num_frames


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_corrupt_bytes_mid_file(corrupt_mp4: Path, isolate: bool) -> None:
    info, _ = probe(corrupt_mp4)
    assert info.num_frames == SOURCE_FRAMES  # the index is intact; the damage shows when decoding

    with Video(corrupt_mp4, isolate=isolate, max_replaced=0.0) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=SOURCE_FRAMES))
        with pytest.raises(CorruptVideoError) as caught:
            list(video.frames(plan))
    assert_actionable(caught.value, corrupt_mp4, f"of {SOURCE_FRAMES} sampled frames could not be decoded",
                      "re-encode", "allow more replaced samples", "at most 0%")

    with Video(corrupt_mp4, isolate=isolate, max_replaced=1.0) as video:
        frames = list(video.frames(plan))
        report = video.report
    assert [f.position for f in frames] == list(range(SOURCE_FRAMES))
    assert [f.index for f in frames] == list(range(SOURCE_FRAMES))
    replaced = [f for f in frames if f.replaced_by is not None]
    assert report.replaced == len(replaced) > 0
    assert report.stats.missing == [f.index for f in replaced]
    by_index = {f.index: f for f in frames}
    for frame in replaced:  # the nearest earlier decodable frame stands in, pixel for pixel
        assert frame.replaced_by < frame.index
        assert np.array_equal(frame.pixels, by_index[frame.replaced_by].pixels)
    # the noise sits in the middle of the data: the first GOP decodes untouched
    first_gop = frames[:SOURCE_GOP]
    assert [videos.read_frame_code(f.pixels, BITS) for f in first_gop] == list(range(SOURCE_GOP))


def test_corrupt_bytes_limit_is_a_share_of_the_samples(corrupt_mp4: Path) -> None:
    with Video(corrupt_mp4, isolate=False, max_replaced=1.0) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=SOURCE_FRAMES))
        list(video.frames(plan))
        lost = video.report.replaced
    assert lost > 0
    below = (lost - 1) / SOURCE_FRAMES  # allows one sample fewer than were lost
    above = (lost + 0.5) / SOURCE_FRAMES
    with Video(corrupt_mp4, isolate=False, max_replaced=below) as video, pytest.raises(CorruptVideoError):
        list(video.frames(plan))
    with Video(corrupt_mp4, isolate=False, max_replaced=above) as video:
        assert len(list(video.frames(plan))) == SOURCE_FRAMES
        assert video.report.replaced == lost


# --- options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, numbers", [
    ({"num_frames": 0}, ["0"]),
    ({"num_frames": -4}, ["-4"]),
    ({"fps": -2.5}, ["-2.5"]),
    ({"fps": 0.0}, ["0"]),
    ({"max_frames": 0}, ["0"]),
    ({"num_frames": 8, "start": 5.0, "end": 3.0}, ["5", "3"]),
    ({"num_frames": 8, "start": 4.0, "end": 4.0}, ["4"]),
    ({"num_frames": 8, "end": -1.0}, ["-1"]),
    ({"num_frames": 8, "fps": 1.0}, []),
], ids=["zero-frames", "negative-frames", "negative-fps", "zero-fps", "zero-max", "start-after-end",
        "empty-range", "negative-end", "count-and-fps"])
def test_nonsensical_sampling_options(kwargs: dict, numbers: list[str]) -> None:
    with pytest.raises(OptionError) as caught:
        SamplingOptions.plain(**kwargs)
    message = str(caught.value)
    assert isinstance(caught.value, HicoError) and isinstance(caught.value, ValueError)
    for number in numbers:
        assert number in message, message


def test_start_past_the_end_fails_at_plan_time(h264_mp4: Path) -> None:
    options = SamplingOptions.plain(num_frames=8, start=20.0)  # valid on its own: the length is not known yet
    with Video(h264_mp4, isolate=False) as video:
        with pytest.raises(OptionError) as caught:
            video.plan(options)
    duration = LONG_FRAMES / FPS  # 13.33 s
    message = str(caught.value)
    assert "20 s" in message
    assert f"{duration:.2f} s long" in message
    assert f"below {duration - 0.1:.2f} s" in message  # the official reader keeps 0.1 s from the end


@pytest.mark.parametrize("kwargs, text", [
    ({"timeout": 0}, "got 0"), ({"timeout": -1.5}, "got -1.5"),
    ({"max_replaced": 1.5}, "got 1.5"), ({"max_replaced": -0.1}, "got -0.1"),
    ({"folder_fps": 0}, "got 0"),
])
def test_nonsensical_reader_options(h264_mp4: Path, kwargs: dict, text: str) -> None:
    with pytest.raises(OptionError, match=text):
        Video(h264_mp4, isolate=False, **kwargs)


def test_plan_out_of_time_order_is_refused(h264_mp4: Path) -> None:
    with Video(h264_mp4, isolate=False) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=4))
        backwards = type(plan)(plan.indices[::-1], plan.duration, plan.time_msg, plan.options)
        with pytest.raises(OptionError, match="time order"):
            list(video.frames(backwards))


# --- worker: hangs and crashes ------------------------------------------------------------------------------


class ScriptedWorker(WorkerClient):
    """A WorkerClient whose process runs `SCRIPT` (argv[1]: the reply pipe), with the real pipe plumbing."""

    SCRIPT = "import time; time.sleep(60)"
    started: list[subprocess.Popen] = []

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(write_fd)], stdin=subprocess.PIPE,
                                     pass_fds=(write_fd,), text=True)
        os.close(write_fd)
        self.fd = read_fd
        ScriptedWorker.started.append(self.proc)


REAL_WORKER_WITH = """
import os, signal, sys, time
import hico.video.worker as worker

def decode_file(*args, **kwargs):
{body}
    yield from ()

worker.decode_file = decode_file
worker.serve(int(sys.argv[1]))
"""


class HangsInDecode(ScriptedWorker):
    SCRIPT = REAL_WORKER_WITH.format(body="    time.sleep(60)")


class CrashesInDecode(ScriptedWorker):
    SCRIPT = REAL_WORKER_WITH.format(body="    os.kill(os.getpid(), signal.SIGSEGV)")  # as an FFmpeg crash would


class ExitsInDecode(ScriptedWorker):
    SCRIPT = REAL_WORKER_WITH.format(body="    os._exit(3)")


@pytest.fixture
def started_processes():
    ScriptedWorker.started = []
    yield ScriptedWorker.started
    for proc in ScriptedWorker.started:  # never leave a sleeper behind, whatever the test did
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_that_never_answers_times_out(h264_mp4: Path, started_processes: list) -> None:
    client = ScriptedWorker(str(h264_mp4), timeout=1.0)
    began = time.monotonic()
    with pytest.raises(DecodeTimeoutError) as caught:
        client.probe()
    elapsed = time.monotonic() - began
    assert 1.0 <= elapsed < 4.0
    assert isinstance(caught.value, TimeoutError)
    assert_actionable(caught.value, h264_mp4, "no progress for 1 s", "raise the decode timeout")
    assert client.proc is None and started_processes[0].poll() is not None  # the hung process was killed


def test_video_decode_that_hangs_times_out(monkeypatch: pytest.MonkeyPatch, h264_mp4: Path,
                                           started_processes: list) -> None:
    monkeypatch.setattr(reader_module, "WorkerClient", HangsInDecode)
    with Video(h264_mp4, timeout=1.5) as video:  # the probe runs normally in the worker
        assert video.info.num_frames == LONG_FRAMES
        plan = video.plan(SamplingOptions.plain(num_frames=4))
        began = time.monotonic()
        with pytest.raises(DecodeTimeoutError) as caught:
            list(video.frames(plan))
        assert 1.5 <= time.monotonic() - began < 4.5
    assert_actionable(caught.value, h264_mp4, "no progress for 1.5 s")
    assert all(proc.poll() is not None for proc in started_processes)


@pytest.mark.parametrize("worker, code", [(CrashesInDecode, -signal.SIGSEGV), (ExitsInDecode, 3)],
                         ids=["segfault", "exit"])
def test_worker_crash_is_a_corrupt_video_error(monkeypatch: pytest.MonkeyPatch, h264_mp4: Path,
                                               started_processes: list, worker, code: int) -> None:
    monkeypatch.setattr(reader_module, "WorkerClient", worker)
    with Video(h264_mp4, timeout=10) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=4))
        began = time.monotonic()
        with pytest.raises(CorruptVideoError) as caught:
            list(video.frames(plan))
        assert time.monotonic() - began < 5  # noticed at once, not after the timeout
    assert_actionable(caught.value, h264_mp4, "decoder process", f"exited with code {code}"
                      if code > 0 else f"killed by signal {-code}", "re-encode")


def test_worker_killed_between_requests(h264_mp4: Path) -> None:
    client = WorkerClient(str(h264_mp4), timeout=10)
    try:
        info, table = client.probe()
        client.proc.kill()  # e.g. the out-of-memory killer, while the worker waits for work
        client.proc.wait()
        with pytest.raises(CorruptVideoError) as caught:
            list(client.decode([5, 100], None, True, "auto", DecodeStats()))
        assert_actionable(caught.value, h264_mp4, "decoder process", f"killed by signal {int(signal.SIGKILL)}")
        assert client.proc is None
        # the next request starts a fresh worker
        frames = list(client.decode([5, 100], None, True, "auto", DecodeStats()))
        assert [videos.read_frame_code(f.pixels, BITS) for f in frames] == [5, 100]
    finally:
        client.close()


def test_one_worker_reads_many_files_and_survives_a_bad_one(tmp_path: Path, h264_mp4: Path, plain_mp4: Path,
                                                              corrupt_mp4: Path) -> None:
    """A lent worker keeps its process (at its priority) from file to file; a failing file costs only itself."""
    (tmp_path / "not_a_video.mp4").write_bytes(b"no video here" * 100)
    client = WorkerClient(timeout=10, nice=19)
    try:
        pids = []
        for path, count in ((h264_mp4, LONG_FRAMES), (plain_mp4, SOURCE_FRAMES)):
            with Video(path, worker=client) as video:
                assert video.info.num_frames == count
                plan = video.plan(SamplingOptions.plain(num_frames=4))
                codes = [videos.read_frame_code(f.pixels, BITS) for f in video.frames(plan)]
                assert codes == list(plan.indices)
            assert client.proc is not None  # closing the video leaves the lent worker running
            pids.append(client.proc.pid)
        assert pids[0] == pids[1]
        assert os.getpriority(os.PRIO_PROCESS, pids[0]) == 19  # it has answered: its nice was applied

        with pytest.raises(NotAMediaFileError):
            Video(tmp_path / "not_a_video.mp4", worker=client)
        with Video(corrupt_mp4, worker=client, max_replaced=0.0) as video:
            with pytest.raises(CorruptVideoError):
                list(video.frames(video.plan(SamplingOptions.plain(num_frames=SOURCE_FRAMES))))
        with Video(h264_mp4, worker=client) as video:  # a read abandoned half way, still referenced ...
            plan = video.plan(SamplingOptions.plain(num_frames=8))
            abandoned = video.frames(plan)
            assert videos.read_frame_code(next(abandoned).pixels, BITS) == plan.indices[0]
        with Video(plain_mp4, worker=client) as video:  # ... leaves nothing behind for the next file
            plan = video.plan(SamplingOptions.plain(num_frames=4))
            assert [videos.read_frame_code(f.pixels, BITS) for f in video.frames(plan)] == list(plan.indices)
            assert video.info.num_frames == SOURCE_FRAMES
        with Video(h264_mp4, worker=client) as first, Video(plain_mp4, worker=client) as second:
            plan = first.plan(SamplingOptions.plain(num_frames=4))  # the worker has opened `second` since
            assert [videos.read_frame_code(f.pixels, BITS) for f in first.frames(plan)] == list(plan.indices)
            assert first.report.samples == 4 and second.info.num_frames == SOURCE_FRAMES
        serving = client.proc
        with pytest.raises(RuntimeError, match="abandoned"):  # and cannot read the next file's frames
            next(abandoned)
        abandoned.close()
        assert client.proc is serving and serving.poll() is None  # nor stop the worker that moved on
    finally:
        client.close()
    assert client.proc is None


# --- CLI ----------------------------------------------------------------------------------------------------


def run_cli(capfd: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()  # file descriptors: the worker process's output is included
    return code, out, err


def assert_one_error_line(err: str, *phrases: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hico: error: ")
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


@pytest.fixture(scope="module")
def noise_file(broken: Path) -> Path:
    path = broken / "noise.bin.mp4"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("case", ["missing", "noise", "audio-only", "truncated"])
def test_cli_probe_unusable_input(capfd: pytest.CaptureFixture, broken: Path, plain_mp4: Path, audio_only: Path,
                                  noise_file: Path, case: str) -> None:
    path, phrase = {
        "missing": (broken / "missing.mp4", "no such file"),
        "noise": (noise_file, "not a media file"),
        "audio-only": (audio_only, "no video stream"),
        "truncated": (_cut(plain_mp4, broken / "cli_half.mp4", 0.5), "not a media file"),
    }[case]
    code, out, err = run_cli(capfd, ["probe", path])
    assert code == 2
    assert out == ""
    assert_one_error_line(err, str(path), phrase)


@pytest.mark.parametrize("args, phrases", [
    (["--num-frames", "0"], ["frame count", "got 0"]),
    (["--fps", "-2"], ["target fps", "got -2"]),
    (["--num-frames", "4", "--start", "5", "--end", "3"], ["start (5.0 s) must be before end (3.0 s)"]),
    (["--num-frames", "4", "--start", "100"], ["start time 100 s", "13.33 s long"]),
    (["--min-frames", "4"], ["--policy"]),
    (["--timeout", "0"], ["timeout", "got 0"]),
], ids=["zero-frames", "negative-fps", "start-after-end", "start-past-end", "min-without-policy", "zero-timeout"])
def test_cli_probe_bad_options(capfd: pytest.CaptureFixture, h264_mp4: Path, args: list[str],
                               phrases: list[str]) -> None:
    code, out, err = run_cli(capfd, ["probe", h264_mp4, *args])
    assert code == 2
    assert out == ""
    assert_one_error_line(err, *phrases)


def test_cli_unparseable_option(capfd: pytest.CaptureFixture, h264_mp4: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["probe", str(h264_mp4), "--num-frames", "many"])
    assert caught.value.code == 2
    _, err = capfd.readouterr()
    assert_one_error_line(err, "--num-frames", "many")


def test_cli_frames_refuses_a_non_empty_out_folder(capfd: pytest.CaptureFixture, tmp_path: Path,
                                                   h264_mp4: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "frame_00000_index0000019_0000.633s.png"  # a name hico itself would write
    keep.write_bytes(b"precious")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    code, stdout, err = run_cli(capfd, ["frames", h264_mp4, "--out", out, "--num-frames", "2"])
    assert code == 2 and stdout == ""
    assert_one_error_line(err, str(out), "not an empty folder", "choose a new --out folder")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before

    target = tmp_path / "a_file.png"  # an existing file is refused too, and left alone
    target.write_bytes(b"mine")
    code, _, err = run_cli(capfd, ["frames", h264_mp4, "--out", target, "--num-frames", "2"])
    assert code == 2 and target.read_bytes() == b"mine"
    assert_one_error_line(err, str(target))


def test_cli_frames_writes_into_a_new_folder(capfd: pytest.CaptureFixture, tmp_path: Path, h264_mp4: Path) -> None:
    # the control for the refusal above: the same command with a fresh folder works
    out = tmp_path / "fresh"
    code, stdout, err = run_cli(capfd, ["frames", h264_mp4, "--out", out, "--num-frames", "3"])
    assert code == 0, err
    written = sorted(out.iterdir())
    assert len(written) == 3 and "wrote 3 frames" in stdout
    indices = plan_samples(LONG_FRAMES, FPS, SamplingOptions.plain(num_frames=3)).indices
    for path, index in zip(written, indices):
        assert f"index{index:07d}" in path.name
        with Image.open(path) as image:
            assert image.size == (224, 224)
            back = image.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
            assert videos.read_frame_code(np.asarray(back), BITS) == index


def _concealed_copy(src: Path, dst: Path) -> tuple[Path, int]:
    """A copy with 40 bytes of noise inside the frame data where the decoder repairs the damage (error
    concealment) instead of rejecting a packet: every frame still comes out, some flagged corrupt. Returns the
    copy and how many frames a plain PyAV decode flags."""
    data = src.read_bytes()
    start, end = data.find(b"mdat"), data.find(b"moov")
    for seed in range(20):
        for where in (0.3, 0.5, 0.7):
            damaged = bytearray(data)
            at = int(start + (end - start) * where)
            damaged[at:at + 40] = np.random.default_rng(seed).integers(0, 256, 40, dtype=np.uint8).tobytes()
            dst.write_bytes(bytes(damaged))
            frames, flagged, rejected = 0, 0, 0
            with av.open(str(dst)) as container:
                for packet in container.demux(video=0):
                    try:
                        for frame in packet.decode():
                            frames, flagged = frames + 1, flagged + frame.is_corrupt
                    except av.error.FFmpegError:
                        rejected += 1
            if flagged and not rejected and frames == SOURCE_FRAMES:
                return dst, flagged
    pytest.skip("no damage found that the decoder conceals without dropping a frame")


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_concealed_frames_are_kept_flagged_and_counted(broken: Path, plain_mp4: Path, isolate: bool,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path, flagged = _concealed_copy(plain_mp4, broken / f"concealed_{isolate}.mp4")
    with Video(path, isolate=isolate, max_replaced=0.0) as video:
        plan = video.plan(SamplingOptions.plain(num_frames=SOURCE_FRAMES))
        with caplog.at_level("WARNING"):
            frames = list(video.frames(plan))
        stats = video.report.stats
    assert [f.index for f in frames] == list(range(SOURCE_FRAMES))  # nothing lost, nothing replaced
    assert sum(f.concealed for f in frames) == stats.concealed == flagged
    assert "repaired damaged data in" in caplog.text


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_count_frames_counts_what_the_decoder_gives(corrupt_mp4: Path, isolate: bool) -> None:
    """From the packets a damaged file promises every frame; decoding them all (as ffprobe -count_frames) finds the
    ones the decoder drops, and a read then replaces nothing: each sample is a frame the decoder gives."""
    with av.open(str(corrupt_mp4)) as container:  # the oracle: a plain decode, rejected packets skipped
        container.streams.video[0].thread_type = "AUTO"  # frame threads, as FFmpeg's command line decodes
        codes = []
        for packet in container.demux(video=0):
            try:
                codes += [videos.read_frame_code(f.to_ndarray(format="rgb24"), BITS) for f in packet.decode()]
            except av.error.FFmpegError:
                pass
    assert len(codes) < SOURCE_FRAMES
    with Video(corrupt_mp4, isolate=isolate, max_replaced=0.0, count_frames=True) as video:
        assert video.info.num_frames == len(codes) and video.info.frame_count == "decoded"
        plan = video.plan(SamplingOptions.plain(num_frames=len(codes)))
        frames = list(video.frames(plan))
    assert video.report.replaced == 0
    assert [videos.read_frame_code(f.pixels, BITS) for f in frames] == [codes[i] for i in plan.indices]
