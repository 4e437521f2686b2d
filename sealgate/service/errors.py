"""One error type for the service: an HTTP status, a stable reason code and a one-line message."""

from __future__ import annotations

from sealgate.errors import SealgateError


class ServiceError(SealgateError):
    """A refusal the service answers with `status` and records in the audit log under `code`.

    As a CLI error (`serve --check`, `audit verify`) it maps to `exit_code` like any other."""

    status = 400
    code = "bad-request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code, code=code, field=field)
        if status is not None:
            self.status = status


class AuthError(ServiceError):
    """401: the bearer token is missing, malformed, foreign, expired or replayed."""

    status = 401
    code = "bad-token"


class GrantError(ServiceError):
    """403: the token is good but no grant of the key lets it sign."""

    status = 403
    code = "no-grant"


class ServiceConfigError(ServiceError):
    """service.yml is wrong: exit 2, naming the file and line."""

    status = 500
    code = "bad-service-config"
    exit_code = 2


class AuditIntegrityError(ServiceError):
    """The audit log does not verify: exit 1, naming the first bad record's index."""

    status = 500
    code = "audit-broken"
    exit_code = 1
