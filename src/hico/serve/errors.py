"""ApiError: what the client is told when a request fails, as OpenAI's error object and an HTTP status."""

from __future__ import annotations

from hico.errors import HicoError


class ApiError(HicoError):
    """`status` is the HTTP status; `kind` OpenAI's error type; `code` a stable machine-readable reason."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error", *,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> ApiError:
    return ApiError(400, message, code, param=param)
