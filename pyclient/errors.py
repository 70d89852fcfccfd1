"""Errors the UI shows as they are: raised by the pure rules (forms, conflict choices) and the browser adapter.

``BrowserApp.call`` turns them into ``{"error": {"kind", "message", "fields"}}`` for JS.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["AppError", "ValidationFailed"]


class AppError(Exception):
    """An error the UI shows as is (``kind`` lets it choose how)."""

    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind:
            self.kind = kind
        self.fields = dict(fields or {})


class ValidationFailed(AppError):
    kind = "validation"
