"""Malformed and hostile requests against a live `hico serve` (no API key, one allowed folder, 1 MB uploads,
3 s upload TTL): each gets a 4xx OpenAI-style JSON error that leaks nothing, and the server keeps answering."""

from __future__ import annotations

import base64
import json
import time

import pytest

pytest.importorskip("fastapi")

from serve_support import demo_video, start_server

QUESTION = "Describe the picture in the video."
UPLOAD_TTL = 3.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-hostile")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    demo = demo_video(allowed / "demo.mp4", seed=3)
    secret = demo_video(outside / "secret.mp4", seed=4)
    (allowed / "escape.mp4").symlink_to(secret.path)  # a link inside the root to a file outside it
    (allowed / "notes.txt").write_text("not a video")
    return {"root": root, "allowed": allowed, "outside": outside, "demo": demo}


@pytest.fixture(scope="module")
def server(folders):
    live = start_server(folders["root"], "--allow-path", str(folders["allowed"]), "--max-upload-mb", "1",
                        "--upload-ttl", str(UPLOAD_TTL))
    yield live
    live.stop()


def chat(content, **extra) -> dict:
    return {"model": "hico-embedded", "messages": [{"role": "user", "content": content}], **extra}


def video(url: str, question: str = QUESTION) -> list[dict]:
    return [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]


def multipart(name: str, data: bytes, field: str = "file") -> tuple[bytes, dict]:
    boundary = "hicotestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def cases(folders) -> list[tuple[str, str, str, object, dict, int, str]]:
    """(name, method, path, body, headers, expected status, expected error code)."""
    allowed = folders["allowed"]
    good = f"file://{folders['demo'].path}"
    not_video = base64.b64encode(b"plain text, not a video" * 10).decode()
    big = base64.b64encode(bytes(2 << 20)).decode()  # 2 MB decoded, over the 1 MB limit
    json_header = {"Content-Type": "application/json"}
    return [
        ("bad JSON", "POST", "/v1/chat/completions", b"{not json", json_header, 400, "invalid_json"),
        ("empty body", "POST", "/v1/chat/completions", b"", json_header, 400, "invalid_json"),
        ("JSON array", "POST", "/v1/chat/completions", b"[]", json_header, 400, "invalid_json"),
        ("deep nesting", "POST", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, json_header, 400,
         "invalid_json"),
        ("no messages", "POST", "/v1/chat/completions", {"model": "hico-embedded"}, {}, 400, "invalid_value"),
        ("empty messages", "POST", "/v1/chat/completions", {"messages": []}, {}, 400, "invalid_value"),
        ("messages not a list", "POST", "/v1/chat/completions", {"messages": "hello"}, {}, 400, "invalid_value"),
        ("unknown role", "POST", "/v1/chat/completions",
         {"messages": [{"role": "root", "content": "hi"}]}, {}, 400, "invalid_value"),
        ("content a number", "POST", "/v1/chat/completions", chat(42), {}, 400, "invalid_type"),
        ("missing video", "POST", "/v1/chat/completions", chat(QUESTION), {}, 400, "missing_media"),
        ("no question", "POST", "/v1/chat/completions", chat(video(good)[:1]), {}, 400, "invalid_value"),
        ("unknown part", "POST", "/v1/chat/completions", chat([{"type": "audio_url"}]), {}, 400, "invalid_value"),
        ("two videos", "POST", "/v1/chat/completions", chat(video(good) + video(good)), {}, 400, "invalid_value"),
        ("url not a string", "POST", "/v1/chat/completions",
         chat([{"type": "video_url", "video_url": {"url": 7}}, {"type": "text", "text": "?"}]), {}, 400,
         "invalid_type"),
        ("huge base64", "POST", "/v1/chat/completions", chat(video("data:video/mp4;base64," + big)), {}, 413,
         "request_too_large"),
        ("damaged base64", "POST", "/v1/chat/completions", chat(video("data:video/mp4;base64,@@@@")), {}, 400,
         "invalid_data_url"),
        ("data URL not a video", "POST", "/v1/chat/completions", chat(video("data:video/mp4;base64," + not_video)),
         {}, 400, "invalid_media"),
        ("image sent as video", "POST", "/v1/chat/completions",
         chat([{"type": "image_url", "image_url": {"url": good}}, {"type": "text", "text": "?"}]), {}, 400,
         "wrong_media_kind"),
        ("path traversal", "POST", "/v1/chat/completions",
         chat(video(f"file://{allowed}/../outside/secret.mp4")), {}, 403, "path_not_allowed"),
        ("symlink escape", "POST", "/v1/chat/completions", chat(video(f"file://{allowed}/escape.mp4")), {}, 403,
         "path_not_allowed"),
        ("outside path", "POST", "/v1/chat/completions", chat(video("file:///etc/passwd")), {}, 403,
         "path_not_allowed"),
        ("missing file in root", "POST", "/v1/chat/completions", chat(video(f"file://{allowed}/nope.mp4")), {},
         404, "file_not_found"),
        ("text file in root", "POST", "/v1/chat/completions", chat(video(f"file://{allowed}/notes.txt")), {},
         400, "invalid_media"),
        ("http URL", "POST", "/v1/chat/completions", chat(video("http://127.0.0.1:9/video.mp4")), {}, 400,
         "remote_url_refused"),
        ("ftp URL", "POST", "/v1/chat/completions", chat(video("ftp://127.0.0.1/video.mp4")), {}, 400,
         "invalid_url"),
        ("unknown upload", "POST", "/v1/chat/completions", chat(video("hico://files/file-" + "0" * 24)), {}, 404,
         "file_not_found"),
        ("upload id traversal", "POST", "/v1/chat/completions", chat(video("hico://files/../../etc/passwd")), {},
         404, "file_not_found"),
        ("unknown model", "POST", "/v1/chat/completions", {**chat(video(good)), "model": "gpt-4o"}, {}, 404,
         "model_not_found"),
        ("negative max_tokens", "POST", "/v1/chat/completions", chat(video(good), max_tokens=-5), {}, 400,
         "invalid_value"),
        ("huge max_tokens", "POST", "/v1/chat/completions", chat(video(good), max_tokens=10**12), {}, 400,
         "invalid_value"),
        ("max_tokens a string", "POST", "/v1/chat/completions", chat(video(good), max_tokens="10"), {}, 400,
         "invalid_type"),
        ("temperature 5", "POST", "/v1/chat/completions", chat(video(good), temperature=5), {}, 400,
         "invalid_value"),
        ("n=2", "POST", "/v1/chat/completions", chat(video(good), n=2), {}, 400, "invalid_value"),
        ("stream not a bool", "POST", "/v1/chat/completions", chat(video(good), stream="yes"), {}, 400,
         "invalid_type"),
        ("unknown hico option", "POST", "/v1/chat/completions", chat(video(good), hico={"rm": "-rf"}), {}, 400,
         "invalid_value"),
        ("zero frames", "POST", "/v1/chat/completions", chat(video(good), hico={"num_frames": 0}), {}, 400,
         "invalid_value"),
        ("start after end", "POST", "/v1/chat/completions", chat(video(good), hico={"start": 50, "end": 10}), {},
         400, "invalid_value"),
        ("bad dropout", "POST", "/v1/chat/completions", chat(video(good), hico={"dropout": {"type": "all"}}), {},
         400, "invalid_value"),
        ("dropout deeper than the model", "POST", "/v1/chat/completions",
         chat(video(good), hico={"dropout": {"type": "uniform", "layers": [40], "ratios": [1, 0.5]}}), {}, 400,
         "invalid_value"),
        ("too many stops", "POST", "/v1/chat/completions", chat(video(good), stop=["a"] * 10), {}, 400,
         "invalid_value"),
        ("upload not a video", "POST", "/v1/files", *multipart("video.mp4", b"MZ\x90\x00 not a video" * 50), 400,
         "invalid_media"),
        ("empty upload", "POST", "/v1/files", *multipart("video.mp4", b""), 400, "empty_file"),
        ("upload too large", "POST", "/v1/files", *multipart("video.mp4", bytes(3 << 20)), 413, "request_too_large"),
        ("upload without file field", "POST", "/v1/files", *multipart("video.mp4", b"x", field="other"), 400,
         "invalid_upload"),
        ("upload as JSON", "POST", "/v1/files", {"file": "x"}, {}, 400, "invalid_upload"),
        ("wrong method", "GET", "/v1/chat/completions", None, {}, 405, "method_not_allowed"),
        ("unknown endpoint", "GET", "/v1/../../etc/passwd", None, {}, 404, "not_found"),
        ("unknown file", "GET", "/v1/files/file-" + "1" * 24, None, {}, 404, "file_not_found"),
        ("cross-origin post", "POST", "/v1/chat/completions", chat(video(good)), {"Origin": "http://evil.example"},
         403, "cross_origin"),
        ("foreign host (DNS rebinding)", "GET", "/v1/models", None, {"Host": "evil.example"}, 421, "wrong_host"),
    ]


def test_hostile_requests_get_4xx_json_and_the_server_keeps_answering(server, folders):
    checked = 0
    for name, method, path, body, headers, status, code in cases(folders):
        got, _, raw = server.request(method, path, body, headers=headers)
        text = raw.decode(errors="replace")
        assert got == status, (name, got, text[:300])
        error = json.loads(text)["error"]
        assert error["code"] == code and error["message"] and error["type"], (name, error)
        for leak in ("Traceback", "hico-serve-", str(folders["outside"]), "site-packages", 'File "'):
            assert leak not in text, (name, leak, text[:300])
        assert server.request("GET", "/health")[0] == 200, name
        checked += 1
    assert checked >= 25
    # and it still answers a good question correctly
    demo = folders["demo"]
    got, _, raw = server.request("POST", "/v1/chat/completions", chat(video(f"file://{demo.path}")))
    assert got == 200, raw[:300]
    answer = json.loads(raw)["choices"][0]["message"]["content"]
    assert demo.colour in answer and demo.shape in answer, answer


def test_no_key_needed_when_none_is_set(server):
    assert server.request("GET", "/v1/models", key=None)[0] == 200
    assert server.request("GET", "/metrics", key=None)[0] == 200


def test_uploads_expire(server, folders):
    body, headers = multipart("demo.mp4", folders["demo"].path.read_bytes())
    got, _, raw = server.request("POST", "/v1/files", body, headers=headers)
    assert got == 200, raw[:300]
    file_id = json.loads(raw)["id"]
    assert server.request("GET", f"/v1/files/{file_id}")[0] == 200
    deadline = time.monotonic() + 60  # TTL 3 s, sweeps every TTL/4; generous for a loaded machine
    while server.request("GET", f"/v1/files/{file_id}")[0] == 200:
        assert time.monotonic() < deadline, "the upload outlived its TTL by a minute"
        time.sleep(0.5)
    assert server.request("GET", f"/v1/files/{file_id}")[1] is not None
    got, _, raw = server.request("POST", "/v1/chat/completions", chat(video(f"hico://files/{file_id}")))
    assert got == 404 and json.loads(raw)["error"]["code"] == "file_not_found"
