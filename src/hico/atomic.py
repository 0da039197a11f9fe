"""Files that another run reads are never seen half written.

Whole files (checkpoints, caches, reports) are written under a unique temporary name in the destination's
own folder and renamed into place (`os.replace` is atomic within one file system), so a reader finds the old
file, the new file or none, never a mix, and two writers of one name cannot trample each other's temporary
file. Results files grow by whole lines (`append_line`): one `write` of the complete line on an append-mode
descriptor; a line cut off by a kill is dropped and trimmed by `read_jsonl`.

    with atomic_path("out/model.safetensors") as tmp:   # write tmp however you like (any library)
        save_file(tensors, str(tmp))
    write_text_atomic("out/config.json", json.dumps(config))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from hico.errors import HicoError

TEMP_SUFFIX = ".tmp"
_HOST = socket.gethostname().replace(".", "_").replace("~", "_") or "host"


def _file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 less the process's umask (read once, at import)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def temporary_name(path: str | Path) -> Path:
    """A name no other process or thread will pick, in `path`'s folder (a rename never crosses devices):
    `.NAME.HOST~PID-RANDOM.tmp`; host and process say whose it is (`remove_stale_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}~{os.getpid()}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is removed.

    `durable` flushes the data to disk before the rename, so a power cut cannot leave an empty file under
    the final name (the rename itself is ordered after the data on journaling file systems). The file gets the
    mode an ordinary write would (FILE_MODE): safetensors writes 0o600, so a checkpoint could not be served
    by another account or a container's user."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        if tmp.is_file():
            with contextlib.suppress(OSError):  # a file system without modes keeps its own
                os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it becomes `path` (which must be absent or an empty
    folder), on any error it is removed with what was written into it: a failed command leaves nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, path)  # rename(2) replaces an empty folder, and refuses a non-empty one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single write on an O_APPEND descriptor: concurrent appenders never interleave
    within a line, and a kill leaves at most one partial last line, which `read_jsonl` drops."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # only on a full disk or a signal; the reader drops the partial line
            raise OSError(f"{path}: wrote {written} of {len(data)} bytes (is the disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, *, repair: bool = True) -> list[dict]:
    """The complete records of a JSONL file that grows by `append_line`.

    A last line without its newline was cut off by an interrupted writer: it is never returned, and with
    `repair` it is trimmed from the file so the next append starts on a fresh line. A complete line that is
    not JSON is someone else's edit, reported as an error naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    records = []
    for number, line in enumerate(complete.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HicoError(f"{path}: line {number} is not JSON ({exc}); fix or delete the line to go on") from exc
        if not isinstance(record, dict):
            raise HicoError(f"{path}: line {number} is not a JSON object; fix or delete the line to go on")
        records.append(record)
    return records


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files that a killed writer of this host left in `folder`; returns how many.

    Only files of this host whose writer process is gone are removed, so a concurrent writer's file is never
    touched (on a shared file system, other hosts' files are left alone)."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        host, _, rest = tmp.name.rsplit(".", 2)[-2].rpartition("~")
        pid = rest.split("-")[0]
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
