"""Typed errors of the source-integrity checks, each with its exit code (DESIGN.md contract)."""

from __future__ import annotations


class IntegrityError(Exception):
    """Base of every error the integrity checks raise on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(IntegrityError):
    """A range, policy file or key line that cannot be used as given (exit 2)."""

    exit_code = 2


class SignatureError(IntegrityError):
    """A commit or tag signature that does not verify; `reason` is what the report shows."""

    exit_code = 1


class UnknownKeyError(SignatureError):
    """A signature by a key the policy does not list (also when the rest of it does not parse)."""


class UnsupportedSignatureError(SignatureError):
    """A signature format Sealgate cannot verify (X.509/gitsign, ...): never counted as valid."""
