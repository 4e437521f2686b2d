"""A CI job's bearer token, verified: asymmetric algorithm, exact issuer, one strict audience,
exp/iat/nbf/jti present, a bounded age. The token is never logged, kept or put in a message."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt

from sealgate.service.auth.claims import normalise
from sealgate.service.auth.identity import Identity
from sealgate.service.auth.jwks import JwksCache
from sealgate.service.config import GITHUB_ISSUER, MAX_LEEWAY, IssuerConfig
from sealgate.service.errors import AuthError, ServiceConfigError
from sealgate.service.protocol import is_unicode

#: The only algorithms a token may use: public-key signatures. `none` and HS* are refused before
#: any key is looked at (an HMAC "signed" with the public key as secret is the classic forgery).
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: A bearer token longer than this is not a CI job's ID token (GitHub's are about 1.5 KiB).
MAX_TOKEN = 16 * 1024
MAX_JTI = 256
REQUIRED = ("iss", "aud", "exp", "iat", "nbf", "jti")
#: Header parameters we refuse: extensions we do not implement (`crit`, RFC 7797's `b64`).
#: `jku`, `x5u`, `x5c` and `jwk` are never followed or used: keys come from the JWKS alone.
_REFUSED_HEADERS = ("crit", "b64")


def _show(value: object, limit: int = 80) -> str:
    """An untrusted value for a message: JSON-quoted (control characters escaped), cut short."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    return json.dumps(text[:limit], ensure_ascii=True)


def default_audience(issuer: IssuerConfig, audience: str) -> str | None:
    """Why `audience` is a provider's default (which any job of any repository can get), or
    None: GitHub's `https://github.com/<owner>`, the issuer URL itself (GitLab's old default)."""
    text = audience.strip().lower()
    if text.startswith(("https://github.com/", "http://github.com/")) or text in {
        "https://github.com",
        "github.com",
    }:
        return "GitHub's default audience (https://github.com/<owner>)"
    if text.rstrip("/") in {issuer.issuer.lower().rstrip("/"), GITHUB_ISSUER}:
        return "the issuer's own URL (the provider's default audience)"
    host = urlsplit(issuer.issuer).hostname
    if host and (text.rstrip("/") == host or urlsplit(text).hostname == host):
        if issuer.provider == "gitlab":
            return "the GitLab instance URL (GitLab's default audience)"
        return "a URL of the issuer's own host (the provider's default audience)"
    return None


#: A compact JWS: three base64url parts (the signature may be empty only for `none`, refused
#: later by algorithm). One C-level match instead of a per-character scan in Python.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _segment_json(segment: str, name: str) -> Any:
    """A base64url part of a token as JSON; refused as malformed when it is not."""
    if len(segment) % 4 == 1:
        raise AuthError(f"bearer token {name} is not base64url", code="token-malformed")
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise AuthError(
            f"bearer token {name} is not base64url JSON", code="token-malformed"
        ) from None


class TokenVerifier:
    """Verifies bearer tokens against the configured issuers, each with its own JWKS cache."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        caches: Mapping[str, JwksCache] | None = None,
        clock: Callable[[], float] = time.time,
        fetch_timeout: float = 5.0,
    ) -> None:
        self._issuers: dict[str, IssuerConfig] = {}
        self._caches: dict[str, JwksCache] = {}
        self._clock = clock
        for issuer in issuers:
            check_issuer(issuer)
            if issuer.issuer in self._issuers:
                raise ServiceConfigError(
                    f"issuer {issuer.name!r}: {issuer.issuer} is configured twice",
                    code="duplicate-issuer",
                    field="issuer",
                )
            self._issuers[issuer.issuer] = issuer
            given = caches.get(issuer.name) if caches else None
            self._caches[issuer.issuer] = given or JwksCache(
                issuer.jwks_url,
                issuer.jwks_refresh_interval,
                fetch_timeout,
                issuer=issuer.issuer,
            )

    def warm(self) -> list[AuthError]:
        """Read every issuer's keys now (at startup, so the first job does not wait); the
        failures, each naming its issuer. The caches retry by themselves later."""
        failures: list[AuthError] = []
        for cache in self._caches.values():
            try:
                cache.refresh()
            except AuthError as exc:
                failures.append(exc)
        return failures

    def cache(self, issuer_name: str) -> JwksCache:
        """The JWKS cache of the issuer named `issuer_name` in service.yml."""
        for iss, config in self._issuers.items():
            if config.name == issuer_name:
                return self._caches[iss]
        raise KeyError(issuer_name)

    def verify(self, token: str) -> Identity:
        """The Identity a valid token proves; AuthError (401, or 503 when the issuer's keys
        cannot be read) naming what is wrong, never the token."""
        header, payload = self._unverified(token)
        alg = str(header["alg"])
        iss = payload.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(
                f"token issuer {_show(iss, 200)} is not one this service trusts",
                code="token-issuer",
                field="iss",
            )
        if alg not in issuer.algorithms:
            raise AuthError(
                f"token from {issuer.issuer}: algorithm {alg} is not one issuer "
                f"{issuer.name!r} allows ({', '.join(issuer.algorithms)})",
                code="token-algorithm",
                field="alg",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError(
                f"token from {issuer.issuer}: no key id (kid) in its header",
                code="token-unknown-key",
                field="kid",
            )
        key = self._caches[issuer.issuer].get(kid, alg)
        claims = self._decode(token, key, alg, issuer)
        return self._identity(issuer, claims)

    # --- the steps ------------------------------------------------------------------------
    @staticmethod
    def _check_header(header: dict[str, Any]) -> None:
        """Refusals that need no key: a non-public-key algorithm, a JWS extension."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC:
            raise AuthError(
                f"token algorithm {_show(alg)} refused: only public-key signatures "
                f"({', '.join(sorted(ASYMMETRIC))})",
                code="token-algorithm",
                field="alg",
            )
        for name in _REFUSED_HEADERS:
            if name in header:
                raise AuthError(
                    f"token header {name!r} refused: no JWS extension is accepted",
                    code="token-header",
                    field=name,
                )

    def _unverified(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(token, str) or not token:
            raise AuthError("no bearer token", code="token-malformed")
        if len(token) > MAX_TOKEN:
            raise AuthError(
                f"bearer token of {len(token)} characters, more than the {MAX_TOKEN} allowed",
                code="token-malformed",
            )
        if _COMPACT_JWS.fullmatch(token) is None:
            raise AuthError(
                "bearer token is not a signed JWT (three base64url parts)",
                code="token-malformed",
            )
        header_part, payload_part, _ = token.split(".")
        header = _segment_json(header_part, "header")
        if not isinstance(header, dict):
            raise AuthError("bearer token header is not a JSON object", code="token-malformed")
        self._check_header(header)
        # Read only to pick the issuer; PyJWT verifies the same bytes in _decode.
        payload = _segment_json(payload_part, "payload")
        if not isinstance(payload, dict):
            raise AuthError("bearer token payload is not a JSON object", code="token-malformed")
        return header, payload

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, issuer: IssuerConfig) -> dict[str, Any]:
        leeway = max(0, min(issuer.leeway, MAX_LEEWAY))
        where = f"token from {issuer.issuer}"
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=leeway,
                options={
                    "require": list(REQUIRED),
                    "verify_signature": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError(
                f"{where}: the signature does not verify with key {key.key_id or ''!s:.64}",
                code="token-signature",
            ) from None
        except jwt.ExpiredSignatureError:
            raise AuthError(f"{where}: expired", code="token-expired", field="exp") from None
        except jwt.ImmatureSignatureError as exc:
            claim = "iat" if "(iat)" in str(exc) else "nbf"
            raise AuthError(
                f"{where}: not valid yet ({claim} is in the future)",
                code="token-not-yet-valid",
                field=claim,
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                f"{where}: claim {exc.claim} is missing", code="token-claim-missing",
                field=exc.claim,
            ) from None  # fmt: skip
        except jwt.InvalidAudienceError:
            raise self._audience_error(issuer, token) from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"{where}: issuer mismatch", code="token-issuer", field="iss") from None
        except jwt.InvalidKeyError as exc:
            raise AuthError(
                f"{where}: key {key.key_id or ''!s:.64} cannot be trusted: {str(exc)[:120]}",
                code="token-weak-key",
                field="kid",
            ) from None
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"{where}: {exc}", code="token-algorithm", field="alg") from None
        except jwt.PyJWTError as exc:
            raise AuthError(
                f"{where}: {type(exc).__name__}: {str(exc)[:120]}", code="token-malformed"
            ) from None
        aud = claims.get("aud")
        if isinstance(aud, list) and aud != [issuer.audience]:
            raise AuthError(
                f"{where}: audience is a list of {len(aud)} values; only {issuer.audience!r} "
                "alone is accepted",
                code="token-audience",
                field="aud",
            )
        for name in ("exp", "iat", "nbf"):
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AuthError(
                    f"{where}: claim {name} is not a number", code="token-malformed", field=name
                )
            try:
                dt.datetime.fromtimestamp(value, dt.UTC)
            except (OverflowError, ValueError, OSError):
                raise AuthError(
                    f"{where}: claim {name} is not a usable time", code="token-malformed",
                    field=name,
                ) from None  # fmt: skip
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti.strip() or len(jti) > MAX_JTI or not is_unicode(jti):
            raise AuthError(
                f"{where}: jti must be a non-empty string of at most {MAX_JTI} characters",
                code="token-claim-missing" if not jti else "token-malformed",
                field="jti",
            )
        age = self._clock() - claims["iat"]
        if age > issuer.max_token_age + leeway:
            raise AuthError(
                f"{where}: issued {int(age)} s ago, more than the {issuer.max_token_age} s "
                f"issuer {issuer.name!r} accepts",
                code="token-too-old",
                field="iat",
            )
        return claims

    def _audience_error(self, issuer: IssuerConfig, token: str) -> AuthError:
        where = f"token from {issuer.issuer}"
        aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
        values = aud if isinstance(aud, list) else [aud]
        for value in values:
            if isinstance(value, str) and default_audience(issuer, value):
                return AuthError(
                    f"{where}: audience {_show(value)} is {default_audience(issuer, value)}; "
                    f"request the audience {issuer.audience!r}",
                    code="token-audience",
                    field="aud",
                )
        return AuthError(
            f"{where}: audience {_show(aud)} is not {issuer.audience!r}",
            code="token-audience",
            field="aud",
        )

    def _identity(self, issuer: IssuerConfig, claims: dict[str, Any]) -> Identity:
        def when(name: str) -> dt.datetime | None:
            value = claims.get(name)
            if isinstance(value, int | float):
                return dt.datetime.fromtimestamp(value, dt.UTC)
            return None

        return Identity(
            issuer_name=issuer.name,
            issuer=issuer.issuer,
            provider=issuer.provider,
            claims=normalise(issuer.provider, claims, issuer=issuer.issuer),
            jti=claims["jti"],
            issued_at=when("iat"),
            expires_at=when("exp"),
        )


def check_issuer(issuer: IssuerConfig) -> None:
    """An issuer setting the verifier would have to weaken is refused, wherever it came from."""
    where = f"issuer {issuer.name!r}"
    if not issuer.audience:
        raise ServiceConfigError(f"{where}: no audience", code="default-audience", field="audience")
    reason = default_audience(issuer, issuer.audience)
    if reason:
        raise ServiceConfigError(
            f"{where}: audience {issuer.audience!r} is {reason}; any job can get a token for it. "
            "Use a Sealgate-specific audience",
            code="default-audience",
            field="audience",
        )
    if not 0 <= issuer.leeway <= MAX_LEEWAY:
        raise ServiceConfigError(
            f"{where}: leeway {issuer.leeway} s; at most {MAX_LEEWAY} s is allowed",
            code="bad-leeway",
            field="leeway",
        )
    bad = [alg for alg in issuer.algorithms if alg not in ASYMMETRIC]
    if bad or not issuer.algorithms:
        raise ServiceConfigError(
            f"{where}: algorithms {', '.join(bad) or '(none)'} refused; only "
            f"{', '.join(sorted(ASYMMETRIC))}",
            code="bad-algorithms",
            field="algorithms",
        )
