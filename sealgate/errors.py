"""Errors raised by the CLI layer itself; the signing core has its own in signer.errors."""

from __future__ import annotations


class SealgateError(Exception):
    """A failure the user must see as one line, with the exit code it maps to."""

    exit_code = 2
    code = "bad-input"
    field: str | None = None

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exit_code: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        if code is not None:
            self.code = code
        if field is not None:
            self.field = field

    def diagnostics(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
