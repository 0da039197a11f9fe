"""`hico serve`: the OpenAI-compatible video chat server and its page, from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hico.errors import HicoError, OptionError

EMBEDDED_NAME = "hico-embedded"  # the `model` id of the shipped toy model
MEMORY_CACHE_MB = 4096  # the help's default: hico.store.MEMORY_BYTES (not imported: it loads torch for --help)


def uvicorn_config(app, config, log_level: str = "info"):
    """uvicorn's settings for `app` served with `config` (a ServeConfig)."""
    import uvicorn

    # a live frame a little above --live-max-frame-mb is refused with a message; one far above closes with 1009
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=10,
                          access_log=log_level == "debug",
                          ws_max_size=config.live_max_frame_bytes + (1 << 20))


def serve(config, model, log_level: str = "info") -> None:
    """Serve `model` (a loaded hico.Hico) with `config` (a ServeConfig) until interrupted."""
    try:
        import uvicorn
        import websockets  # noqa: F401 - uvicorn's WebSocket protocol, for live sessions

        from hico.serve.app import create_app
    except ImportError as exc:
        raise HicoError(f"hico serve needs its extra packages ({exc.name} is missing): "
                        "pip install 'hico[serve]'") from None
    app = create_app(config, model)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"hico serve: {app.state.server.name} on http://{shown}:{config.port}/ "
          f"({'API key required' if config.api_key else 'no API key'})", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn_config(app, config, log_level)).run()  # the app's lifespan stops the engine's processes


def cmd_serve(args: argparse.Namespace) -> None:
    from hico.cli import load_model  # hico.cli loads this module to register `serve`
    from hico.serve.config import LOOPBACK, ServeConfig  # torch and the video readers load only to serve

    key = args.api_key if args.api_key is not None else os.environ.get("HICO_API_KEY") or None
    if args.host not in LOOPBACK and key is None:
        raise OptionError(f"--host {args.host} opens the server beyond this machine: set --api-key KEY (or "
                          "HICO_API_KEY) so that strangers cannot use it")
    if not args.max_upload_mb > 0:
        raise OptionError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not 0 < args.live_max_frame_mb < float("inf"):
        raise OptionError(f"--live-max-frame-mb must be positive, got {args.live_max_frame_mb:g}")
    if not 0 <= args.memory_cache_mb < float("inf"):
        raise OptionError(f"--memory-cache-mb must be a number of megabytes >= 0, got {args.memory_cache_mb:g}")
    config = ServeConfig(host=args.host, port=args.port, api_key=key,
                         allow_paths=tuple(Path(p) for p in args.allow_path or ()), allow_remote=args.allow_remote,
                         max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_queue=args.max_queue,
                         cache_dir=Path(args.cache) if args.cache else None, memory_cache=args.memory_cache,
                         memory_cache_bytes=int(args.memory_cache_mb * (1 << 20)),
                         upload_dir=Path(args.upload_dir) if args.upload_dir else None, upload_ttl=args.upload_ttl,
                         request_timeout=args.request_timeout, max_tokens_limit=args.max_tokens_limit,
                         default_max_tokens=min(512, args.max_tokens_limit),
                         served_model_name=args.served_model_name or ("" if args.model else EMBEDDED_NAME),
                         live_sessions=args.live_sessions, live_max_tokens=args.live_max_tokens,
                         live_max_frame_bytes=int(args.live_max_frame_mb * (1 << 20)),
                         live_queue_frames=args.live_queue_frames, live_idle_timeout=args.live_idle_timeout)
    serve(config, load_model(args), args.log_level)


def register(sub) -> None:
    from hico.cli import add_engine_args, add_model_args  # hico.cli loads this module to register `serve`

    parser = sub.add_parser("serve", help="an OpenAI-compatible video chat server with a browser page")
    add_model_args(parser)
    add_engine_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $HICO_API_KEY, if set)")
    parser.add_argument("--allow-path", action="append", metavar="DIR",
                        help="a folder whose videos file:// URLs may name (repeatable; default: none)")
    parser.add_argument("--allow-remote", action="store_true", help="fetch http(s):// media URLs (default: refused)")
    parser.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload or data URL, MB")
    parser.add_argument("--max-queue", type=int, default=32, help="requests waiting for the model; more get 429")
    parser.add_argument("--cache", help="folder that keeps encoded videos (shared with `hico chat --cache`)")
    parser.add_argument("--memory-cache-mb", type=float, default=MEMORY_CACHE_MB, metavar="MB",
                        help="RAM for encoded videos and the prompt prefixes kept with them, least recently used "
                             "going first (default %(default)g)")
    parser.add_argument("--memory-cache", type=int, metavar="N",
                        help="also keep at most N encoded videos in RAM (default: no count limit, --memory-cache-mb "
                             "alone)")
    parser.add_argument("--upload-dir", help="folder for uploads (default: a temporary one, removed at exit)")
    parser.add_argument("--upload-ttl", type=float, default=3600.0, help="seconds before an upload is deleted")
    parser.add_argument("--request-timeout", type=float, default=300.0,
                        help="seconds from arrival to the last token before a request ends with 504")
    parser.add_argument("--max-tokens-limit", type=int, default=4096, help="the largest max_tokens a request may ask")
    parser.add_argument("--served-model-name", help="the model id clients send (default: hico-embedded or the "
                                                    "checkpoint folder's name)")
    parser.add_argument("--live-sessions", type=int, default=4, metavar="N",
                        help="live video sessions (/v1/live) open at once; 0 turns them off (default %(default)s)")
    parser.add_argument("--live-max-tokens", type=int, default=16384, metavar="TOKENS",
                        help="the largest visual-token budget a live session may ask for, and its default "
                             "(default %(default)s)")
    parser.add_argument("--live-max-frame-mb", type=float, default=4.0, metavar="MB",
                        help="largest live frame (JPEG or PNG), MB (default %(default)g)")
    parser.add_argument("--live-queue-frames", type=int, default=16, metavar="FRAMES",
                        help="a live session's frames waiting for the model; more are dropped and counted "
                             "(default %(default)s)")
    parser.add_argument("--live-idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="seconds a live session may send nothing before it is closed (default %(default)g)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.set_defaults(func=cmd_serve)
