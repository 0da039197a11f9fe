"""Media the server may read: uploads (limit, probing, TTL), data: URLs, file:// roots, and --allow-remote fetches
from a loopback HTTP server."""

from __future__ import annotations

import base64
import functools
import http.server
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from serve_support import demo_video

from hico.memory import file_digest
from hico.serve.errors import ApiError
from hico.serve.files import FileStore, LocalFiles


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_video(tmp_path_factory.mktemp("serve-files") / "demo.mp4", seconds=16)


def status(call) -> int:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value.status


def test_upload_is_probed_by_content_and_limited(tmp_path, demo):
    store = FileStore(tmp_path / "store", ttl=60, max_bytes=demo.path.stat().st_size, decode_timeout=30)
    data = demo.path.read_bytes()
    stored = store.add([data[:1000], data[1000:]], "../../etc/evil name.txt")  # the name is for display only
    assert stored.kind == "video" and stored.digest == file_digest(demo.path)
    assert stored.filename == "evil name.txt" and stored.path.parent == store.folder
    assert store.get(stored.id) == stored
    assert status(lambda: store.add([data, b"x"], "big.mp4")) == 413
    assert status(lambda: store.add([b"GIF89a not really"], "a.gif")) == 400
    assert sorted(p.name for p in store.folder.iterdir()) == [stored.id]  # refused uploads leave nothing


def test_sweep_deletes_what_outlived_the_ttl(tmp_path, demo):
    store = FileStore(tmp_path / "store", ttl=10, max_bytes=1 << 30, decode_timeout=30)
    stored = store.add([demo.path.read_bytes()], "demo.mp4")
    url = "data:video/mp4;base64," + base64.b64encode(demo.path.read_bytes()).decode()
    media = store.data_url(url, "video")
    assert store.data_url(url, "video").path == media.path  # one stored file per content
    assert store.sweep(now=time.time() + 5) == 0
    assert store.sweep(now=time.time() + 11) == 2
    assert status(lambda: store.get(stored.id)) == 404 and not media.path.exists()


def test_data_url_whose_file_was_swept_in_between_is_stored_again(tmp_path, demo, monkeypatch):
    store = FileStore(tmp_path / "store", ttl=10, max_bytes=1 << 30, decode_timeout=30)
    data = demo.path.read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    media = store.data_url(url, "video")
    exists = Path.exists  # the sweeper deletes the file right after the store saw it there
    monkeypatch.setattr(Path, "exists", lambda self: True if self == media.path else exists(self))
    media.path.unlink()
    again = store.data_url(url, "video")
    assert again.path == media.path and again.path.read_bytes() == data and again.kind == "video"


def test_data_url_kind_must_match(tmp_path, demo):
    store = FileStore(tmp_path / "store", ttl=10, max_bytes=1 << 30, decode_timeout=30)
    payload = base64.b64encode(demo.path.read_bytes()).decode()
    assert status(lambda: store.data_url("data:image/png;base64," + payload, "video")) == 400
    assert store.data_url("data:video/webm;base64," + payload, "video").kind == "video"  # the bytes decide


def test_file_urls_stay_inside_the_roots(tmp_path, demo):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "demo.mp4").write_bytes(demo.path.read_bytes())
    (outside / "secret.mp4").write_bytes(demo.path.read_bytes())
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    (root / "inner").symlink_to(outside)
    local = LocalFiles((root.resolve(),), decode_timeout=30)
    assert local.resolve(f"file://{root}/demo.mp4").digest == file_digest(demo.path)
    assert local.resolve(f"file://{root}/sub/../demo.mp4").kind == "video"
    for url in (f"file://{root}/link.mp4", f"file://{root}/inner/secret.mp4", f"file://{root}/../outside/secret.mp4",
                f"file://{root}/%2e%2e/outside/secret.mp4", "file:///etc/passwd"):
        assert status(lambda url=url: local.resolve(url)) == 403, url
    assert status(lambda: local.resolve(f"file://{root}/missing.mp4")) == 404
    assert status(lambda: LocalFiles((), 30).resolve(f"file://{root}/demo.mp4")) == 403


def test_remote_fetch_is_size_limited(tmp_path, demo):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(demo.path.parent))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/{demo.path.name}"
            store = FileStore(tmp_path / "store", ttl=10, max_bytes=1 << 30, decode_timeout=30)
            assert store.remote(url).digest == file_digest(demo.path)
            small = FileStore(tmp_path / "small", ttl=10, max_bytes=1000, decode_timeout=30)
            assert status(lambda: small.remote(url)) == 413
            assert status(lambda: store.remote(url + ".missing")) == 400
        finally:
            httpd.shutdown()
