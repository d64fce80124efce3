"""Connect-style errors the emulator answers with, and their HTTP statuses."""

from __future__ import annotations

from flask import Response, jsonify

# Connect's error codes and the HTTP status its unary protocol pairs with each.
CONNECT_STATUS = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "aborted": 409,
    "resource_exhausted": 429,
    "internal": 500,
}


class EmulatorError(Exception):
    """A request the emulated backend refuses, answered as ``{"code", "message"}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        if code not in CONNECT_STATUS:
            raise ValueError(f"unknown Connect code {code!r}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return CONNECT_STATUS[self.code]

    def to_response(self) -> Response:
        """The JSON error body with its HTTP status."""
        response = jsonify(code=self.code, message=self.message)
        response.status_code = self.status
        return response
