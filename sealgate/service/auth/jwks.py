"""An issuer's signing keys, fetched over HTTP and cached by `kid`, with our own refresh rules.

PyJWKClient's cache drops its keys when a refresh fails; ours keeps them, refreshes on an unknown
`kid` at most once per interval (a flood of made-up kids cannot hammer the issuer), and re-reads
the set after `max_age` so a key the issuer withdrew stops verifying.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
import urllib3

from sealgate.service.errors import AuthError

#: A JWKS or discovery document larger than this is refused (GitHub's is about 3 KiB).
MAX_DOCUMENT = 256 * 1024
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
#: Key types that can verify an asymmetric signature; `oct` (an HMAC secret) never can.
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def unavailable(message: str) -> AuthError:
    """The issuer's keys cannot be read: 503 (exit 3, a backend down), safe to retry."""
    return AuthError(message, status=503, code="jwks-unavailable", exit_code=3)


def allowed_url(url: str) -> bool:
    """https anywhere, plain http only to this machine (the test issuer); no credentials."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost", "::1"}


def fetch_json(url: str, *, what: str, timeout: float, limit: int = MAX_DOCUMENT) -> Any:
    """GET a JSON document: no redirects, at most `limit` bytes, `timeout` seconds in all."""
    if not allowed_url(url):
        raise unavailable(f"{what} {url}: not an https URL (plain http only to localhost)")
    deadline = time.monotonic() + timeout
    try:
        with requests.get(
            url, timeout=timeout, allow_redirects=False, stream=True,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        ) as answer:  # fmt: skip
            if answer.status_code != 200:
                raise unavailable(f"{what} {url}: HTTP {answer.status_code}")
            body = bytearray()
            # read1: whatever has arrived, so a server dripping a byte at a time meets the
            # deadline instead of holding a request thread for as long as it likes
            while chunk := answer.raw.read1(16384):
                body += chunk
                if len(body) > limit:
                    raise unavailable(f"{what} {url}: more than {limit} bytes")
                if time.monotonic() > deadline:
                    raise unavailable(f"{what} {url}: not read within {timeout:g} s")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise unavailable(f"{what} {url}: {type(exc).__name__}") from None
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        raise unavailable(f"{what} {url}: not JSON") from None


@dataclass(frozen=True)
class _KeySet:
    jwks: dict[str, dict[str, Any]]
    fetched: float


class JwksCache:
    """The keys of one issuer by `kid`. Thread-safe: readers never wait for a fetch of keys they
    already have; one thread fetches at a time, and a failed fetch keeps the old set."""

    def __init__(
        self,
        url: str | None,
        refresh_interval: float = 60.0,
        timeout: float = 5.0,
        *,
        issuer: str | None = None,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url is None and issuer is None:
            raise ValueError("JwksCache needs a JWKS URL or an issuer to discover it from")
        self.url = url
        self.issuer = issuer
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.max_age = max(max_age, refresh_interval)
        self._clock = clock
        self._keys: _KeySet | None = None
        self._prepared: dict[tuple[str, str], jwt.PyJWK] = {}
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._fetch_lock = threading.Lock()
        self._lock = threading.Lock()
        self.fetches = 0

    # --- reading keys ---------------------------------------------------------------------
    def get(self, kid: str, alg: str) -> jwt.PyJWK:
        """The key `kid` bound to `alg`; AuthError token-unknown-key if the issuer has no such
        key (after at most one refresh per interval), jwks-unavailable if it cannot be read."""
        keys = self._keys
        now = self._clock()
        if keys is not None and kid in keys.jwks:
            if now - keys.fetched > self.max_age and self._fetch_lock.acquire(blocking=False):
                try:
                    self._refresh_locked(keep_on_failure=True)
                finally:
                    self._fetch_lock.release()
                keys = self._keys
        else:
            with self._fetch_lock:
                keys = self._keys
                if keys is None or kid not in keys.jwks:
                    if self._may_attempt():
                        self._refresh_locked(keep_on_failure=True)
                    keys = self._keys
        if keys is None:
            raise unavailable(f"the keys of {self.where()}: {self._last_error or 'not read yet'}")
        jwk = keys.jwks.get(kid)
        if jwk is None:
            if self._last_error is not None:
                raise unavailable(
                    f"key id {kid[:64]!r} is not among the keys of {self.where()} and they "
                    f"cannot be refreshed: {self._last_error}"
                )
            raise AuthError(
                f"key id {kid[:64]!r} is not among the keys of {self.where()}",
                code="token-unknown-key",
                field="kid",
            )
        return self._prepare(kid, alg, jwk, keys)

    def where(self) -> str:
        return self.url or f"{self.issuer} (discovered)"

    def _may_attempt(self) -> bool:
        if self._last_attempt is None:
            return True
        # a set that was never read is retried sooner: the service is useless without it
        wait = self.refresh_interval if self._keys is not None else min(self.refresh_interval, 5)
        return self._clock() - self._last_attempt >= wait

    def _prepare(self, kid: str, alg: str, jwk: dict[str, Any], keys: _KeySet) -> jwt.PyJWK:
        """The JWK as a PyJWK bound to `alg`, if its type and its own `alg` allow that."""
        kty = _KTY_FOR_ALG.get(alg[:2])
        if kty is None or jwk.get("kty") != kty:
            raise AuthError(
                f"key id {kid[:64]!r} of {self.where()} is a {jwk.get('kty')!s:.16} key, "
                f"which cannot verify {alg}",
                code="token-algorithm",
                field="alg",
            )
        if "alg" in jwk and jwk["alg"] != alg:
            raise AuthError(
                f"key id {kid[:64]!r} of {self.where()} is for {jwk['alg']!s:.16}, "
                f"the token says {alg}",
                code="token-algorithm",
                field="alg",
            )
        with self._lock:
            prepared = self._prepared.get((kid, alg))
        if prepared is None:
            try:
                prepared = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError as exc:
                raise AuthError(
                    f"key id {kid[:64]!r} of {self.where()} cannot be used: {exc}",
                    code="token-unknown-key",
                    field="kid",
                ) from None
            with self._lock:
                if self._keys is keys:
                    self._prepared[(kid, alg)] = prepared
        return prepared

    # --- fetching -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the set now (startup); a failure keeps the old keys and is raised."""
        with self._fetch_lock:
            self._refresh_locked(keep_on_failure=True)
            if self._last_error is not None:
                raise unavailable(f"the keys of {self.where()}: {self._last_error}")

    def _refresh_locked(self, *, keep_on_failure: bool) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            jwks = parse_jwks(self._fetch(), where=self.where())
        except AuthError as exc:
            self._last_error = exc.message
            if not keep_on_failure:
                self._keys = None
            return
        with self._lock:
            self._keys = _KeySet(jwks, self._clock())
            self._prepared = {}
            self._last_error = None

    def _fetch(self) -> Any:
        url = self.url
        if url is None:
            url = discover_jwks_url(self.issuer or "", timeout=self.timeout)
        return fetch_json(url, what="JWKS", timeout=self.timeout)


def discover_jwks_url(issuer: str, *, timeout: float) -> str:
    """`jwks_uri` from the issuer's openid-configuration, whose `issuer` must be `issuer`."""
    url = issuer.rstrip("/") + DISCOVERY_SUFFIX
    document = fetch_json(url, what="OpenID configuration", timeout=timeout)
    if not isinstance(document, dict):
        raise unavailable(f"OpenID configuration {url}: not a JSON object")
    if document.get("issuer") != issuer:
        raise unavailable(
            f"OpenID configuration {url}: its issuer is {str(document.get('issuer'))[:200]!r}, "
            f"not {issuer!r}"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not allowed_url(jwks_uri):
        raise unavailable(f"OpenID configuration {url}: no usable https jwks_uri")
    return jwks_uri


def parse_jwks(document: Any, *, where: str) -> dict[str, dict[str, Any]]:
    """Signing keys by kid; no kid, not for signing, symmetric or unloadable: left out. A kid
    listed twice is left out entirely: which of the two signed is not ours to guess."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise unavailable(f"JWKS {where}: not a JSON object with a keys list")
    found: dict[str, dict[str, Any]] = {}
    twice: set[str] = set()
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("kty") not in {"RSA", "EC", "OKP"}:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if kid in found:
            twice.add(kid)
        found[kid] = entry
    for kid in twice:
        del found[kid]
    if not found:
        raise unavailable(f"JWKS {where}: no usable signing keys")
    return found
