"""Typed errors of the source-integrity checks, each with its exit code (DESIGN.md contract)."""

from __future__ import annotations


class IntegrityError(Exception):
    """Base of every error the integrity checks raise on purpose; `code` is the stable reason
    (docs/reason-codes.md) that reports key on."""

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
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(IntegrityError):
    """A range, policy file or key line that cannot be used as given (exit 2)."""

    exit_code = 2
    code = "bad-input"


class PolicyError(InputError):
    """A policy, a key it lists, or a policy being imported, that cannot be used (exit 2)."""

    code = "policy-invalid"


class SignatureError(IntegrityError):
    """A commit or tag signature that does not verify; `reason` is what the report shows."""

    exit_code = 1
    code = "bad-signature"


class UnknownKeyError(SignatureError):
    """A signature by a key the policy does not list (also when the rest of it does not parse)."""

    code = "unknown-key"


class UnsupportedSignatureError(SignatureError):
    """A signature format Sealgate cannot verify (X.509/gitsign, ...): never counted as valid."""

    code = "unsupported-signature"
