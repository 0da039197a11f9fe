"""Media a request may refer to: uploads (size-limited, probed, deleted after a time to live), data: URLs and
file:// paths inside the allowed roots. Every media file is known by the BLAKE2b of its bytes, which keys the
shared video memories.

Nothing of the server's file system reaches a client: uploads are named `hico://files/ID`, probe errors are
reworded without the stored path, and a path outside the roots is refused before its existence is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hico.errors import HicoError, VideoError
from hico.memory import file_digest
from hico.serve.errors import ApiError, bad_request
from hico.video.reader import Video

FILE_URL = "hico://files/"
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.IGNORECASE)
_FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
COPY_CHUNK = 1 << 20
# Probing a video starts a decode worker process: a burst of new files must not start one per request thread
PROBES = threading.BoundedSemaphore(2)
REMOTE_TIMEOUT = 30.0  # seconds for one http(s) fetch (only with --allow-remote)


@dataclass(frozen=True)
class Media:
    """A resolved media input: where its bytes are, what it is and its content hash."""

    path: Path
    kind: str  # "video" or "image"
    digest: str
    name: str  # how errors name it to the client (never a server path it did not send)


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str  # as the client sent it, for display only
    path: Path
    bytes: int
    kind: str
    digest: str
    created_at: float

    def describe(self, ttl: float) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": int(self.created_at),
                "expires_at": int(self.created_at + ttl), "filename": self.filename, "purpose": "vision",
                "status": "processed", "hico": {"kind": self.kind, "url": FILE_URL + self.id}}


def probe_kind(path: Path, name: str, decode_timeout: float) -> str:
    """"image" or "video", from the bytes (the file name is never trusted); a 400 ApiError otherwise."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:  # verify() passes some truncated files: decode the pixels too
            image.load()
        return "image"
    except Image.DecompressionBombError:
        raise bad_request(f"{name}: the image has too many pixels", "invalid_media") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass  # not an image: maybe a video
    try:
        with PROBES, Video(path, timeout=decode_timeout) as video:
            info = video.info
            if info.num_frames < 1 or info.kind == "file" and min(info.width, info.height) < 1:
                raise bad_request(f"{name}: not a video or image we can read (no frames with a picture size)",
                                  "invalid_media")
    except VideoError as exc:
        raise bad_request(f"{name}: not a video or image we can read ({exc.problem})", "invalid_media") from None
    except HicoError as exc:
        raise bad_request(f"{name}: not a video or image we can read ({public_message(exc, path, name)})",
                          "invalid_media") from None
    return "video"


def public_message(exc: BaseException, path: Path | str, name: str) -> str:
    """An error message with the server-side path replaced by the name the client knows."""
    if isinstance(exc, VideoError):
        return f"{name}: {exc.problem}. {exc.advice}"
    return str(exc).replace(str(path), name)


class FileStore:
    """Uploads and decoded data: URLs, in one private folder; `sweep()` deletes what outlived the TTL."""

    def __init__(self, folder: Path, ttl: float, max_bytes: int, decode_timeout: float) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.decode_timeout = decode_timeout
        self.files: dict[str, StoredFile] = {}
        self.kinds: dict[str, str] = {}  # digest -> kind of the data: URL files already probed and stored
        self.lock = threading.Lock()

    def add(self, chunks: Iterable[bytes], filename: str) -> StoredFile:
        """Store an upload from its byte chunks: 413 past the size limit, 400 unless it probes as media."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        partial = self.folder / f"{file_id}.partial"
        digest = hashlib.blake2b(digest_size=16)
        size = 0
        try:
            with open(partial, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise bad_request("the uploaded file is empty", "empty_file", "file")
            name = _display_name(filename)
            kind = probe_kind(partial, name, self.decode_timeout)
            path = self.folder / file_id
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        stored = StoredFile(file_id, name, path, size, kind, digest.hexdigest(), time.time())
        with self.lock:
            self.files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        with self.lock:
            stored = self.files.get(file_id) if _FILE_ID.match(file_id) else None
        if stored is None or not stored.path.exists():
            raise ApiError(404, f"no file {file_id!r} (uploads expire after {self.ttl:g} s; upload it again)",
                           "file_not_found", param="file_id")
        return stored

    def delete(self, file_id: str) -> None:
        stored = self.get(file_id)
        with self.lock:
            self.files.pop(file_id, None)
        stored.path.unlink(missing_ok=True)

    def listing(self) -> list[StoredFile]:
        with self.lock:
            return sorted(self.files.values(), key=lambda f: f.created_at)

    def data_url(self, url: str, expected: str) -> Media:
        """A `data:...;base64,` URL, written once per content into the store (it then expires like uploads)."""
        match = _DATA_URL.match(url[:200])
        if match is None:
            raise bad_request("a data URL must look like data:video/mp4;base64,... or data:image/png;base64,...",
                              "invalid_data_url")
        mime = (match["mime"] or "").lower()
        if not mime.startswith(expected + "/"):
            raise bad_request(f"a {expected}_url data URL needs a {expected}/... type, got {mime or 'none'!r}",
                              "invalid_data_url")
        payload = url[match.end():]
        if len(payload) * 3 // 4 > self.max_bytes:
            raise too_large(self.max_bytes)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("the data URL's base64 payload is damaged", "invalid_data_url") from None
        if not data:
            raise bad_request("the data URL holds no bytes", "invalid_data_url")
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        path = self.folder / f"data-{digest}"
        with self.lock:
            kind = self.kinds.get(digest) if path.exists() else None
        if kind is not None:
            try:
                os.utime(path)  # in use again: its time to live starts over
            except FileNotFoundError:  # swept just now: stored again below (touch would leave it empty)
                kind = None
        if kind is None:
            partial = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.partial")
            partial.write_bytes(data)
            try:
                kind = probe_kind(partial, f"the {expected} data URL", self.decode_timeout)
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
            with self.lock:
                self.kinds[digest] = kind
        return Media(path, kind, digest, f"the {expected} data URL")

    def remote(self, url: str) -> Media:
        """Fetch an http(s) URL into the store (size-limited); only reached with --allow-remote."""
        digest = hashlib.blake2b(digest_size=16)
        partial = self.folder / f"remote-{uuid.uuid4().hex[:24]}.partial"
        try:
            with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT) as response, open(partial, "wb") as out:
                size = 0
                while chunk := response.read(COPY_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
            kind = probe_kind(partial, url, self.decode_timeout)
            path = self.folder / f"remote-{digest.hexdigest()}"
            partial.replace(path)
        except OSError as exc:  # URLError and HTTPError are OSErrors
            raise bad_request(f"{url}: could not fetch it ({getattr(exc, 'reason', exc)})", "fetch_failed") from None
        finally:
            partial.unlink(missing_ok=True)
        return Media(path, kind, digest.hexdigest(), url)

    def sweep(self, now: float | None = None) -> int:
        """Delete uploads and data files older than the TTL; returns how many went."""
        cutoff = (time.time() if now is None else now) - self.ttl
        with self.lock:
            expired = [f for f in self.files.values() if f.created_at < cutoff]
            for stored in expired:
                del self.files[stored.id]
        for stored in expired:
            stored.path.unlink(missing_ok=True)
        gone = len(expired)
        for path in self.folder.iterdir():
            if not path.name.startswith("file-") and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                gone += 1
        return gone

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the media is larger than this server's limit of {limit / (1 << 20):g} MB "
                         "(--max-upload-mb)", "file_too_large")


def _display_name(filename: str) -> str:
    name = Path(filename or "upload").name
    return re.sub(r"[^\w.\- ]", "_", name)[:120] or "upload"


class LocalFiles:
    """file:// URLs under the allowed roots, symlinks and `..` resolved first; digests memoised by mtime."""

    def __init__(self, roots: tuple[Path, ...], decode_timeout: float) -> None:
        self.roots = roots
        self.decode_timeout = decode_timeout
        self.known: dict[tuple[str, int, int], tuple[str, str]] = {}  # (path, size, mtime) -> (digest, kind)
        self.pending: dict[tuple[str, int, int], threading.Lock] = {}  # one hash-and-probe per file at a time
        self.lock = threading.Lock()

    def resolve(self, url: str) -> Media:
        raw = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if not self.roots:
            raise ApiError(403, "this server reads no local files (start it with --allow-path DIR); upload the "
                                "video or send it as a data URL", "path_not_allowed")
        if "\x00" in raw or not raw.startswith("/"):
            raise bad_request(f"{url!r}: a file URL needs an absolute path, as in file:///videos/talk.mp4",
                              "invalid_file_url")
        # resolve() follows every symlink and `..`; the check is on where the file really is
        path = Path(raw).resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise ApiError(403, f"{raw}: outside the folders this server may read (--allow-path)",
                           "path_not_allowed")
        if not path.exists():
            raise ApiError(404, f"{raw}: no such file", "file_not_found")
        stat = path.stat()
        token = (str(path), stat.st_size, stat.st_mtime_ns)
        with self.lock:
            pending = self.pending.setdefault(token, threading.Lock())
        with pending:  # requests for a file being hashed wait for that result instead of hashing it again
            with self.lock:
                known = self.known.get(token)
            if known is None:
                try:
                    known = (file_digest(path), probe_kind(path, raw, self.decode_timeout))
                except PermissionError:
                    raise ApiError(403, f"{raw}: the server may not read it", "path_not_allowed") from None
                with self.lock:
                    self.known[token] = known
        return Media(path, known[1], known[0], raw)
