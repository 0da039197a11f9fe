"""The FastAPI application: OpenAI-style routes, the live video socket (hico.serve.live), the page, and a gate in
front of them (body size, host and origin checks, API key, per-route status counts). Every failure answers
OpenAI's error JSON; tracebacks go to the server log only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import shutil
import tempfile
import time
import urllib.parse
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from hico.api import Hico
from hico.clips import TOKENS_PER_FRAME
from hico.errors import HicoError, OptionError
from hico.serve.auth import check_key, needs_key
from hico.serve.cache import ServeStore
from hico.serve.config import LOOPBACK, ServeConfig
from hico.serve.errors import ApiError, bad_request
from hico.serve.files import FILE_URL, FileStore, LocalFiles, Media, public_message
from hico.serve.live import CLOSE_POLICY, LiveSession, LiveSlots
from hico.serve.metrics import Metrics
from hico.serve.protocol import ChatRequest, chunk, completion, parse_chat, usage
from hico.serve.worker import Job, ModelWorker, timeout_error
from hico.video.reader import Video

log = logging.getLogger("hico.serve")
STATIC = Path(__file__).parent / "static"
POLL = 0.25  # seconds between checks for a client that went away while its request waits
THUMB_SIZE = 96  # pixels, the page's strip of sampled frames
DRAIN_BYTES = 64 << 20  # a refused body is read this far so that its sender sees the answer, not a reset
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/files", "/v1/chat/completions", "/v1/hico/preview")


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class Gate:
    """Pure ASGI middleware: counts statuses by route, refuses oversized bodies, foreign hosts and origins
    (DNS rebinding, cross-site form posts) and requests without the API key."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        # base64 inflates media by 4/3; a megabyte more for the JSON or multipart around it
        self.max_body = config.max_upload_bytes * 4 // 3 + (1 << 20)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":  # the live session checks the key itself: browsers send it in a message
            refusal = self.refusal(scope, key=False)
            if refusal is not None:  # a close before the handshake is answered: the client sees HTTP 403
                await receive()
                return await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": refusal.code})
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "/v1/files/{id}" if path.startswith("/v1/files/") else \
            "/static" if path.startswith("/static/") else "other"
        status = 500

        async def counted_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self.refusal(scope)
            if refusal is not None:
                await drain(receive, DRAIN_BYTES)
                return await error_response(refusal)(scope, receive, counted_send)
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "the request body is larger than this server accepts (--max-upload-mb)",
                                   "request_too_large")
                return message

            try:
                await self.app(scope, limited_receive, counted_send)
            except ApiError as exc:  # only the body limit gets here; before a response started, say so
                if exc.status != 413:
                    raise
                await error_response(exc)(scope, receive, counted_send)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()

    def refusal(self, scope, key: bool = True) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.config.host in LOOPBACK and urllib.parse.urlsplit(f"//{host}").hostname not in (*LOOPBACK, None):
            return ApiError(421, "this server answers to loopback host names only", "wrong_host")
        origin = headers.get("origin")
        if origin and urllib.parse.urlsplit(origin).netloc != host:
            return ApiError(403, "cross-origin requests are refused", "cross_origin")
        if key and self.config.api_key is not None and needs_key(scope["path"]):
            try:
                check_key(headers.get("authorization"), self.config.api_key)
            except ApiError as exc:
                return exc
        length = headers.get("content-length", "0")
        if not length.isdigit():
            return bad_request("bad Content-Length header", "invalid_request")
        if int(length) > self.max_body:
            return ApiError(413, "the request body is larger than this server accepts (--max-upload-mb)",
                            "request_too_large")
        return None


async def drain(receive, limit: int) -> None:
    """Read and drop a refused body (up to `limit` bytes): a client still sending when the connection closes
    sees a reset instead of the 413 that says why."""
    read = 0
    while read <= limit:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class EventStream(Response):
    """Server-Sent Events of one job; the job is cancelled when the client disconnects or the stream ends."""

    media_type = "text/event-stream"

    def __init__(self, job: Job, model: str, plan: dict) -> None:
        super().__init__(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # it streams
        self.job, self.model, self.plan = job, model, plan

    async def __call__(self, scope, receive, send) -> None:
        job, request = self.job, self.job.request

        async def sse(data) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            await send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})

        async def pump() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await sse(chunk(request, self.model, {"role": "assistant", "content": ""}))
            while True:
                kind, value = await job.events.get()
                if kind == "text":
                    await sse(chunk(request, self.model, {"content": value}))
                elif kind == "done":
                    await sse(chunk(request, self.model, {}, value["finish"], hico=self.plan))
                    if request.include_usage:
                        await sse({**chunk(request, self.model, {}), "choices": [], "usage": usage(**value["counts"])})
                    break
                elif kind == "error":
                    await sse(value.body())
                    break
            await sse("[DONE]")
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(watch())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            job.cancel()  # a no-op when the answer is complete; stops the generation when the client left
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class Server:
    """What the routes share: config, model, worker, the video store and the file stores."""

    def __init__(self, config: ServeConfig, model: Hico) -> None:
        self.config = config
        self.model = model
        self.name = config.served_model_name or model.name
        self.metrics = Metrics()
        self.own_upload_dir = config.upload_dir is None
        folder = Path(tempfile.mkdtemp(prefix="hico-serve-")) if config.upload_dir is None else config.upload_dir
        self.files = FileStore(folder, config.upload_ttl, config.max_upload_bytes, config.decode_timeout)
        self.local = LocalFiles(config.roots, config.decode_timeout)
        self.store = ServeStore(model, cache_dir=config.cache_dir, memory_bytes=config.memory_cache_bytes,
                                max_videos=config.memory_cache, decode_timeout=config.decode_timeout,
                                on_get=self.metrics.count_stored)
        self.worker = ModelWorker(model, self.store, self.metrics, config.max_queue)
        self.live = LiveSlots(config.live_sessions)
        self.metrics.live_sessions.set_function(self.live.count)
        self.metrics.live_memory_bytes.set_function(self.live.memory_bytes)
        self.previews = asyncio.Semaphore(2)  # thumbnail decodes at once: they share the CPUs with the model

    def resolve(self, url: str, expected: str) -> Media:
        """A media URL -> Media; a 4xx ApiError for anything not allowed or not readable."""
        scheme = urllib.parse.urlsplit(url[:100]).scheme.lower()
        if url.startswith(FILE_URL):
            stored = self.files.get(url[len(FILE_URL):])
            media = Media(stored.path, stored.kind, stored.digest, url)
        elif scheme == "data":
            media = self.files.data_url(url, expected)
        elif scheme == "file":
            media = self.local.resolve(url)
        elif scheme in ("http", "https"):
            if not self.config.allow_remote:
                raise ApiError(400, "this server does not fetch http(s) URLs (start it with --allow-remote); "
                                    "upload the video to /v1/files and send hico://files/ID, or a data: URL",
                               "remote_url_refused")
            media = self.files.remote(url)
        else:
            raise bad_request(f"unsupported {expected} URL scheme {scheme[:20]!r}: use hico://files/ID, "
                              "data:, file:// (inside --allow-path) or http(s):// (with --allow-remote)",
                              "invalid_url")
        if media.kind != expected:
            raise bad_request(f"{media.name[:200]}: sent as {expected}_url but it is a{'n' * (media.kind == 'image')} "
                              f"{media.kind}; use {media.kind}_url", "wrong_media_kind")
        return media

    def job(self, request: ChatRequest, loop) -> Job:
        media = tuple(self.resolve(ref.url, ref.kind) for ref in request.media)
        timeout = min(request.timeout or self.config.request_timeout, self.config.request_timeout)
        arrived = time.monotonic()
        return Job(request, media, request.sampling or self.config.sampling, loop, arrived + timeout, arrived)

    async def sweep_uploads(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.config.upload_ttl / 4))
            try:
                await run_in_threadpool(self.files.sweep)
            except OSError:
                log.exception("could not delete expired uploads")

    def close(self) -> None:
        self.worker.stop()
        self.store.close()
        if self.own_upload_dir:
            shutil.rmtree(self.files.folder, ignore_errors=True)


async def read_json(request: Request):
    body = await request.body()
    if not body:
        raise bad_request("the request has no body; send a JSON object", "invalid_json")
    try:
        return await run_in_threadpool(json.loads, body)
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON", "invalid_json") from None


async def next_event(job: Job, request: Request, grace: float = 5.0):
    """The job's next event; cancels it when the client leaves or the deadline (plus a grace) passes."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), timeout=POLL)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "the client closed the request", "client_closed") from None
            if time.monotonic() > job.deadline + grace:
                job.cancel()
                raise timeout_error(job.deadline - job.arrived) from None


def create_app(config: ServeConfig, model: Hico) -> FastAPI:
    """The application serving `model`; the model worker starts and stops with the app's lifespan."""
    server = Server(config, model)

    @asynccontextmanager
    async def lifespan(_app):
        server.worker.start()
        sweeper = asyncio.create_task(server.sweep_uploads())
        try:
            yield
        finally:
            sweeper.cancel()
            await run_in_threadpool(server.close)
            if hasattr(model, "close"):  # an engine with processes of its own (vLLM's) stops them here: uvicorn
                await run_in_threadpool(model.close)  # ends a SIGTERM'd process right after the lifespan

    app = FastAPI(title="hico serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(Gate, config=config, metrics=server.metrics)

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return error_response(ApiError(exc.status_code, message, codes.get(exc.status_code, "invalid_request")))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "internal server error (the server log has the details)",
                                       "internal_error", "server_error"))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.name, "queue": server.worker.depth(),
                "max_queue": config.max_queue}

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        return {"id": server.name, "object": "model", "created": 0, "owned_by": "hico",
                "hico": {"fingerprint": model.model_id, "image_size": server.store.image_size}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        if name != server.name:
            raise ApiError(404, f"no model {name[:100]!r}; this server serves {server.name!r}", "model_not_found")
        return model_card()

    @app.post("/v1/files")
    async def upload(request: Request):
        form = await request.form(max_files=1, max_fields=8)  # a damaged form is a 400 HTTPException
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise bad_request("the upload must be multipart/form-data with a `file` field", "invalid_upload",
                                  "file")
            chunks = iter(lambda: file.file.read(1 << 20), b"")
            stored = await run_in_threadpool(server.files.add, chunks, file.filename or "upload")
        finally:
            await form.close()
        return stored.describe(config.upload_ttl)

    @app.get("/v1/files")
    async def list_files():
        return {"object": "list", "data": [f.describe(config.upload_ttl) for f in server.files.listing()]}

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str):
        return server.files.get(file_id).describe(config.upload_ttl)

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str):
        await run_in_threadpool(server.files.delete, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.post("/v1/hico/preview")
    async def preview(request: Request):
        """The sampling plan of a video and thumbnails of up to `preview_frames` of its sampled frames."""
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise bad_request("send {\"url\": ..., \"hico\": {sampling options}}", "invalid_value", "url")
        probe = {"model": server.name, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": body["url"]}}, {"type": "text", "text": "?"}]}],
            "hico": body.get("hico") or {}}
        parsed = parse_chat(probe, config.max_tokens_limit, config.default_max_tokens)
        async with server.previews:
            return await run_in_threadpool(thumbnails, server, parsed)

    @app.websocket("/v1/live")
    async def live(websocket: WebSocket):
        """A live video session: frames in, questions answered as the stream plays (protocol: hico.serve.live)."""
        await LiveSession(server, websocket).run()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        parsed = parse_chat(await read_json(request), config.max_tokens_limit, config.default_max_tokens)
        if parsed.model is not None and parsed.model != server.name:
            raise ApiError(404, f"no model {parsed.model[:100]!r}; this server serves {server.name!r}",
                           "model_not_found", param="model")
        try:  # the checkpoint's schedule for "default" (or none given) and "model"; checked against its depth
            parsed = replace(parsed, dropout=model.schedule(parsed.dropout))
        except OptionError as exc:
            raise bad_request(f"hico dropout: {exc}", "invalid_value", "hico.dropout") from None
        job = await run_in_threadpool(server.job, parsed, asyncio.get_running_loop())
        server.worker.submit(job)
        kind, value = await next_event(job, request)
        if kind == "error":
            raise value
        plan = value
        if parsed.stream:
            return EventStream(job, server.name, plan)
        while True:
            kind, value = await next_event(job, request)
            if kind == "error":
                raise value
            if kind == "done":
                return completion(parsed, server.name, value["text"], value["finish"], value["counts"], plan)

    return app


def thumbnails(server: Server, request: ChatRequest) -> dict:
    """Plan + JPEG thumbnails (data URLs) of evenly spread sampled frames; runs in a thread, not the worker."""
    media = server.resolve(request.media[0].url, "video")
    options = request.sampling or server.config.sampling
    try:
        with Video(media.path, timeout=server.config.decode_timeout) as video:
            plan = video.plan(options)
            times = video.times(plan)
            count = min(server.config.preview_frames, plan.num_frames)
            picks = sorted({round(i * (plan.num_frames - 1) / max(count - 1, 1)) for i in range(count)})
            shown = replace(plan, indices=tuple(plan.indices[i] for i in picks))
            strip = []
            for frame in video.frames(shown, THUMB_SIZE):
                out = io.BytesIO()
                Image.fromarray(frame.pixels).save(out, "JPEG", quality=80)
                strip.append({"index": frame.index, "time": round(frame.time, 3),
                              "image": "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()})
            info = video.info
    except HicoError as exc:
        raise bad_request(public_message(exc, media.path, media.name), "invalid_media") from None
    return {"url": media.name, "width": info.width, "height": info.height, "fps": info.fps,
            "video_duration": info.duration, "frames": plan.num_frames, "indices": list(plan.indices),
            "times": times, "duration": plan.duration, "time_msg": plan.time_msg.strip(),
            "visual_tokens": TOKENS_PER_FRAME * plan.num_frames, "thumbnails": strip}
