"""The CI job's OIDC ID token, the client's one credential for the signing service.

Sources, in order: `SEALGATE_ID_TOKEN` (or `SEALGATE_ID_TOKEN_FILE`), GitHub Actions' token
endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` + `_TOKEN`, a fresh token per call), then a GitLab
`id_tokens` variable by name. Tokens are secrets: no message ever holds one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from sealgate.errors import SealgateError
from signer.errors import ConfigError
from signer.files import read_capped
from signer.http import HttpClient, HttpFailedError, HttpUnavailableError, RetryPolicy
from signer.redact import redact_url

TOKEN_ENV = "SEALGATE_ID_TOKEN"  # noqa: S105 - a variable name
TOKEN_FILE_ENV = "SEALGATE_ID_TOKEN_FILE"  # noqa: S105 - a variable name
GITHUB_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN_ENV = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105 - a variable name
#: A JWT from a CI provider is a few KB; anything far larger is not one.
MAX_TOKEN = 64 * 1024
#: Hosts plain http may reach: the token then never leaves the machine.
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
#: The GitHub endpoint is asked patiently (a GET mints, it does not spend anything).
_GITHUB_POLICY = RetryPolicy(attempts=3, backoff=0.5, timeout=10.0, budget=30.0)


class TokenError(SealgateError):
    """No usable ID token: exit 2, saying what the job must declare."""

    code = "no-id-token"


def check_transport(url: str, what: str, *, field: str | None = None) -> None:
    """https, or plain http to this machine only: a bearer token in clear is a token given away."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise SealgateError(
            f"{what} {redact_url(url)!r}: not a URL", code="bad-url", field=field
        ) from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host in LOOPBACK:
        return
    raise SealgateError(
        f"{what} {redact_url(url)!r}: https is required (plain http only to 127.0.0.1, ::1 or "
        "localhost): the token would travel in clear",
        code="insecure-url",
        field=field,
    )


def claims_of(token: str) -> dict[str, object]:
    """The token's payload, unverified (the service verifies it): only to see its audience."""
    try:
        payload = token.split(".")[1]
        data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(data)
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _checked(token: str, source: str, audience: str) -> str:
    """A token that looks like a JWT minted for `audience`; sending one minted for another
    audience would hand another service's credential to this one."""
    token = token.strip()
    if not token:
        raise TokenError(f"{source} is empty", hint=_HINT.format(aud=audience))
    if len(token) > MAX_TOKEN or not _JWT.match(token):
        raise TokenError(f"{source} does not hold a JWT (header.payload.signature)",
                         code="bad-id-token")  # fmt: skip
    aud = claims_of(token).get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if aud is not None and audience not in audiences:
        shown = ", ".join(repr(str(a))[:80] for a in audiences)
        raise TokenError(
            f"{source}: the token is for audience {shown}, not {audience!r}; it is not sent",
            hint="mint it for the service's audience (--audience)",
            code="id-token-audience",
        )
    return token


_HINT = (
    "on GitHub Actions give the job `permissions: id-token: write`; on GitLab CI declare "
    "`id_tokens: SEALGATE_ID_TOKEN: aud: {aud}`; or set SEALGATE_ID_TOKEN"
)


@dataclass(frozen=True)
class TokenSource:
    """Where the job's token comes from; `renewable` when each call may mint a fresh one."""

    audience: str
    env: Mapping[str, str]
    id_token_var: str = TOKEN_ENV

    @property
    def renewable(self) -> bool:
        """GitHub mints a token per request; a fixed token is one request (its jti is spent)."""
        return self.kind == "github"

    @property
    def kind(self) -> str:
        if self.env.get(TOKEN_ENV, "").strip() or self.env.get(TOKEN_FILE_ENV, "").strip():
            return "fixed"
        if self.env.get(GITHUB_URL_ENV, "").strip() and self.env.get(GITHUB_TOKEN_ENV, ""):
            return "github"
        return "fixed"

    @property
    def describe(self) -> str:
        """The source in words, for messages (never the token)."""
        env = self.env
        if env.get(TOKEN_ENV, "").strip():
            return f"${TOKEN_ENV}"
        if env.get(TOKEN_FILE_ENV, "").strip():
            return f"${TOKEN_FILE_ENV}"
        if self.kind == "github":
            return "the GitHub Actions token endpoint"
        return f"${self.id_token_var}"

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the request token, and any fixed token in the environment."""
        names = (TOKEN_ENV, GITHUB_TOKEN_ENV, self.id_token_var)
        return tuple(v for v in (self.env.get(n, "").strip() for n in names) if len(v) >= 4)

    def token(self) -> str:
        return job_token(self.audience, self.env, id_token_var=self.id_token_var)


def job_token(audience: str, env: Mapping[str, str], *, id_token_var: str = TOKEN_ENV) -> str:
    """The job's OIDC ID token for `audience`, from the first source the environment offers."""
    if not audience.strip():
        raise SealgateError("the audience is empty", code="missing-option", field="audience")
    fixed = env.get(TOKEN_ENV, "")
    if fixed.strip():
        return _checked(fixed, f"${TOKEN_ENV}", audience)
    path = env.get(TOKEN_FILE_ENV, "").strip()
    if path:
        try:
            data = read_capped(Path(path), what=f"${TOKEN_FILE_ENV}", limit=MAX_TOKEN)
        except ConfigError as exc:
            raise TokenError(exc.message, code=exc.code) from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise TokenError(f"${TOKEN_FILE_ENV} {path}: not a JWT (not ASCII)",
                             code="bad-id-token") from None  # fmt: skip
        return _checked(text, f"${TOKEN_FILE_ENV} {path}", audience)
    url = env.get(GITHUB_URL_ENV, "").strip()
    if url:
        request_token = env.get(GITHUB_TOKEN_ENV, "").strip()
        if not request_token:
            raise TokenError(
                f"${GITHUB_URL_ENV} is set but ${GITHUB_TOKEN_ENV} is not",
                hint="give the job `permissions: id-token: write`",
            )
        return _checked(github_token(url, request_token, audience), "the GitHub token", audience)
    named = env.get(id_token_var, "")
    if named.strip():
        return _checked(named, f"${id_token_var}", audience)
    raise TokenError(
        f"no OIDC ID token for audience {audience!r}: none of ${TOKEN_ENV}, ${TOKEN_FILE_ENV}, "
        f"${GITHUB_URL_ENV} or ${id_token_var} is set",
        hint=_HINT.format(aud=audience),
    )


def github_token(url: str, request_token: str, audience: str) -> str:
    """GET `url&audience=AUD` with the runner's request token; the answer is {"value": JWT}."""
    check_transport(url, f"${GITHUB_URL_ENV}")
    separator = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    full = f"{url}{separator}audience={quote(audience, safe='')}"
    shown = redact_url(url)
    try:
        with HttpClient(_GITHUB_POLICY) as client:
            answer = client.request(
                "GET", full, headers={"Authorization": f"bearer {request_token}",
                                      "Accept": "application/json"}, max_bytes=MAX_TOKEN * 2,
            )  # fmt: skip
    except HttpUnavailableError as exc:
        raise SealgateError(
            f"the GitHub token endpoint {shown}: {exc.reason}",
            code="id-token-unavailable",
            exit_code=3,
        ) from None
    except HttpFailedError as exc:
        raise SealgateError(
            f"the GitHub token endpoint {shown}: {exc.reason}",
            code="id-token-unavailable",
            exit_code=3,
        ) from None
    if answer.status != 200:
        hint = (
            "give the job `permissions: id-token: write`" if answer.status in (401, 403) else None
        )
        raise TokenError(
            f"the GitHub token endpoint {shown} answered HTTP {answer.status}",
            hint=hint,
            code="id-token-refused",
        )
    try:
        document = json.loads(answer.body)
        value = document["value"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise TokenError(
            f"the GitHub token endpoint {shown}: the answer has no token (expected "
            '{"value": "..."})',
            code="bad-id-token",
        ) from None
    if not isinstance(value, str):
        raise TokenError(f"the GitHub token endpoint {shown}: the token is not a string",
                         code="bad-id-token")  # fmt: skip
    return value
