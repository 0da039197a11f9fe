"""`hico serve`: an OpenAI-compatible video chat server with a browser page.

The server only translates its protocol into engine calls: one model worker answers requests from a bounded
queue through `Hico.generate`; a video is encoded once per (content hash, sampling, model) by a `VideoStore` and
shared by every request that sends it. Stages, by file:

    config.py    ServeConfig: every server setting, with the CLI's defaults
    errors.py    ApiError: a 4xx/5xx the client caused or may retry, as OpenAI-style JSON
    auth.py      the bearer-key check
    files.py     uploads (size limit, content probing, time to live) and media URLs (allowed roots)
    protocol.py  the chat-completions request parser and response/chunk builders
    cache.py     shared video memories: the engine's VideoStore (RAM bounded in bytes, disk cache), media in
    worker.py    the single model worker: queue, then the engine's generate (stop strings, cancellation, timeouts)
    live.py      live video sessions on a WebSocket (/v1/live): frames in, questions answered as the stream plays
    metrics.py   Prometheus metrics
    app.py       the FastAPI application: routes, middleware, error handlers, the page
    cli.py       `hico serve` options
"""
