"""Typed errors of the signing core: each carries a one-line message and the exit code it maps to.

Exit codes follow the contract in DESIGN.md: 1 verification failure, 2 usage or
configuration error, 3 infrastructure failure (HSM, KMS, TSA unreachable).
"""

from __future__ import annotations


class SignerError(Exception):
    """Base of every error the signing core raises on purpose.

    `code` is the stable, machine-readable reason (docs/reason-codes.md): reports, the audit log
    and the dashboard key on it, never on the message, which may be reworded.
    """

    exit_code = 2
    code = "error"

    #: The input the error is about, by its field name (`trust_roots`, `repo`, `out_dir`): the
    #: CLI shows the flag for it, the service its request field. Messages never name flags.
    field: str | None = None

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        if field is not None:
            self.field = field

    def diagnostics(self) -> str:
        """The line shown to the user: what went wrong, and what to do when we know."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(SignerError):
    """Bad input: a file, URI, PIN, certificate or option that cannot work as given."""

    exit_code = 2
    code = "bad-input"


class VerificationError(SignerError):
    """A signature, digest or certificate that does not verify."""

    exit_code = 1
    code = "verification-failed"


class BackendUnavailableError(SignerError):
    """The HSM or KMS could not be reached or failed after retries."""

    exit_code = 3
    code = "backend-unavailable"
