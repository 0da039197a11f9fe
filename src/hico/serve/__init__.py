"""`hico serve`: an OpenAI-compatible video chat server with a browser page.

One model worker answers requests from a bounded queue; a video is encoded once per (content hash, sampling,
model) and shared by every request that sends it. Stages, by file:

    config.py    ServeConfig: every server setting, with the CLI's defaults
    errors.py    ApiError: a 4xx/5xx the client caused or may retry, as OpenAI-style JSON
    auth.py      the bearer-key check
    files.py     uploads (size limit, content probing, time to live) and media URLs (allowed roots)
    protocol.py  the chat-completions request parser and response/chunk builders
    cache.py     shared video memories: LRU in memory over the disk cache
    worker.py    the single model worker: queue, encode, generate, stop strings, cancellation, timeouts
    metrics.py   Prometheus metrics
    app.py       the FastAPI application: routes, middleware, error handlers, the page
    cli.py       `hico serve` options
"""
