"""The API key check: `Authorization: Bearer KEY`, compared in constant time."""

from __future__ import annotations

import hmac

from hico.serve.errors import ApiError

OPEN_PATHS = ("/health", "/", "/favicon.ico")  # the page's HTML holds no data: it asks for the key itself
OPEN_PREFIXES = ("/static/",)


def needs_key(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def check_key(header: str | None, key: str) -> None:
    """Raise a 401 ApiError unless `header` is `Bearer KEY`; the compare takes the same time for any wrong key."""
    scheme, _, given = (header or "").partition(" ")
    # compare_digest on bytes of both: its time depends on the lengths only, never on where they differ
    if not hmac.compare_digest(given.strip().encode(), key.encode()) or scheme.lower() != "bearer":
        raise ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer KEY`",
                       "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
