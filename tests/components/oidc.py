"""A local OIDC issuer for the signing service's tests: discovery and a JWKS over HTTP on
127.0.0.1, RS256/ES256 keys made at test time, tokens minted with GitHub/GitLab-shaped claims.

The real issuers cannot be reached here; the service verifies these tokens with its real code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sealgate.service.config import IssuerConfig, Provider

DEFAULT_AUDIENCE = "sealgate-test"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
#: A claim given as this in `mint(claims)` / `github_claims(...)` is left out of the token.
OMIT = None

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    family: str  # "RSA" or "EC"
    private: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public))
            jwk["alg"] = "RS256"
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(public))
            jwk["alg"] = "ES256"
        jwk.update(kid=self.kid, use="sig")
        return jwk


def _new_keys() -> dict[str, SigningKey]:
    tag = secrets.token_hex(4)
    return {
        "RSA": SigningKey(f"rsa-{tag}", "RSA", rsa.generate_private_key(65537, 2048)),
        "EC": SigningKey(f"ec-{tag}", "EC", ec.generate_private_key(ec.SECP256R1())),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class _Canned:
    status: int
    body: bytes
    headers: dict[str, str]
    #: seconds between the body's bytes (a slow-drip server); 0: all at once
    drip: float = 0.0


class OidcIssuer:
    """An OIDC issuer on 127.0.0.1:<free port> (a context manager; stop() joins its threads).

    `url` is the `iss`; `path` puts the issuer below a prefix, as a GitLab instance at
    `https://host/gitlab` is. `requests` counts GETs per path (JWKS refresh tests)."""

    def __init__(self, *, audience: str = DEFAULT_AUDIENCE, path: str = "") -> None:
        self.audience = audience
        self.path = path.rstrip("/")
        self.url = ""
        self.jwks_url = ""
        self.requests: dict[str, int] = {}
        #: bytes each dripped answer got out before the client hung up (or all of them)
        self.dripped: list[int] = []
        self._keys = _new_keys()
        self._extra_jwks: list[dict[str, Any]] = []
        self._canned: dict[str, _Canned] = {}
        self._discovery_overrides: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> Self:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, headers, drip = issuer._answer(self.path.split("?", 1)[0])
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not drip:
                    self.wfile.write(body)
                    return
                sent = 0
                try:
                    while sent < len(body) and not issuer._stopping.wait(drip):
                        self.wfile.write(body[sent : sent + 1])
                        self.wfile.flush()
                        sent += 1
                except OSError:  # the client gave up: that is what a drip test wants
                    pass
                with issuer._lock:
                    issuer.dripped.append(sent)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        port = server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{self.path}"
        self.jwks_url = f"{self.url}{JWKS_PATH}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"oidc-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what it serves ------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf"],
        }
        document.update(self._discovery_overrides)
        return document

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = [key.public_jwk() for key in self._keys.values()] + list(self._extra_jwks)
        return {"keys": keys}

    def _answer(self, path: str) -> tuple[int, bytes, dict[str, str], float]:
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            canned = self._canned.get(path)
        if canned is not None:
            return canned.status, canned.body, canned.headers, canned.drip
        json_type = {"Content-Type": "application/json"}
        if path == self.path + DISCOVERY_PATH:
            return 200, json.dumps(self.discovery()).encode(), json_type, 0.0
        if path == self.path + JWKS_PATH:
            return 200, json.dumps(self.jwks()).encode(), json_type, 0.0
        return 404, b"not found", {"Content-Type": "text/plain"}, 0.0

    def request_count(self, what: str = "jwks") -> int:
        """GETs served so far of "jwks", "discovery" or a literal path."""
        path = {"jwks": self.path + JWKS_PATH, "discovery": self.path + DISCOVERY_PATH}.get(
            what, what
        )
        with self._lock:
            return self.requests.get(path, 0)

    # --- test controls -------------------------------------------------------------------
    def rotate(self) -> None:
        """New RSA and EC keys with new kids; the old ones leave the JWKS."""
        keys = _new_keys()
        with self._lock:
            self._keys = keys

    def fail_jwks(self, failing: bool = True) -> None:
        """The JWKS answers 500 while `failing`."""
        if failing:
            self.respond(JWKS_PATH, 500, b'{"error": "down"}')
        else:
            self.respond(JWKS_PATH, None)

    def respond(
        self,
        path: str,
        status: int | None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        drip: float = 0.0,
    ) -> None:
        """Answer GET `path` (relative to the issuer) with a fixed response, its body sent one
        byte every `drip` seconds if given; status None: answer normally again."""
        full = self.path + path
        with self._lock:
            if status is None:
                self._canned.pop(full, None)
            else:
                self._canned[full] = _Canned(status, body, dict(headers or {}), drip)

    def publish(self, jwk: dict[str, Any]) -> None:
        """Add a raw JWK to the JWKS (an `oct` key, a duplicate kid...)."""
        with self._lock:
            self._extra_jwks.append(dict(jwk))

    def override_discovery(self, **fields: Any) -> None:
        self._discovery_overrides.update(fields)

    def kid(self, alg: str = "RS256") -> str:
        return self._key_for(alg).kid

    def private_key(self, alg: str = "RS256") -> PrivateKey:
        return self._key_for(alg).private

    def _key_for(self, alg: str) -> SigningKey:
        with self._lock:
            return self._keys["EC" if alg.startswith("ES") else "RSA"]

    # --- tokens --------------------------------------------------------------------------
    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        audience: Any = DEFAULT_AUDIENCE,
        lifetime: int = 300,
        iat: int | None = None,
        nbf: int | None = None,
        jti: str | None = None,
        headers: Mapping[str, Any] | None = None,
        key: Any = None,
    ) -> str:
        """A JWT with iss/aud/iat/nbf/exp/jti filled unless `claims` gives them (None: left out);
        `key` signs instead of the issuer's key (the HMAC secret for HS*; "none" is unsigned)."""
        now = int(time.time()) if iat is None else iat
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience if audience == DEFAULT_AUDIENCE else audience,
            "iat": now,
            "nbf": now if nbf is None else nbf,
            "exp": now + lifetime,
            "jti": jti or uuid.uuid4().hex,
        }
        payload.update(claims or {})
        payload = {name: value for name, value in payload.items() if value is not None}
        header: dict[str, Any] = {"typ": "JWT", "alg": alg}
        if alg.lower() != "none" and not alg.startswith("HS"):
            header["kid"] = kid if kid is not None else self._key_for(alg).kid
        elif kid is not None:
            header["kid"] = kid
        header.update(headers or {})
        header = {name: value for name, value in header.items() if value is not None}
        return self._encode(header, payload, alg, key)

    def _encode(self, header: dict[str, Any], payload: dict[str, Any], alg: str, key: Any) -> str:
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(payload, separators=(",", ":")).encode())
        )
        if alg.lower() == "none":
            return signing_input + "."
        if alg.startswith("HS"):
            digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
            secret = key if isinstance(key, bytes) else secrets.token_bytes(32)
            mac = hmac.new(secret, signing_input.encode(), digest[alg]).digest()
            return signing_input + "." + _b64(mac)
        private = key if key is not None else self._key_for(alg).private
        algorithm = jwt.get_algorithm_by_name(alg)
        signature = algorithm.sign(signing_input.encode(), private)
        return signing_input + "." + _b64(signature)

    def config(
        self,
        name: str = "test",
        provider: Provider = "github",
        *,
        discover: bool = False,
        **fields: Any,
    ) -> IssuerConfig:
        """An IssuerConfig trusting this issuer (jwks_url set unless `discover`)."""
        values: dict[str, Any] = {
            "name": name,
            "provider": provider,
            "issuer": self.url,
            "audience": self.audience,
            "jwks_url": None if discover else self.jwks_url,
        }
        values.update(fields)
        return IssuerConfig(**values)


# --- realistic claim sets -------------------------------------------------------------------
def _apply(claims: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def github_claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a GitHub Actions OIDC token for a push to main of octo-org/octo-repo
    (iss/aud/iat/nbf/exp/jti are the issuer's); a None override removes the claim."""
    sha = "d9a4f6e1c2b3a4d5e6f7a8b9c0d1e2f3a4b5c6d7"
    workflow = "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main"
    claims: dict[str, Any] = {
        "sub": "repo:octo-org/octo-repo:environment:release",
        "repository": "octo-org/octo-repo",
        "repository_id": "123456789",
        "repository_owner": "octo-org",
        "repository_owner_id": "987654",
        "repository_visibility": "private",
        "actor": "octocat",
        "actor_id": "5830",
        "workflow": "release",
        "workflow_ref": workflow,
        "workflow_sha": sha,
        "job_workflow_ref": workflow,
        "job_workflow_sha": sha,
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "ref_protected": "true",
        "sha": sha,
        "environment": "release",
        "run_id": "8112345678",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
    }
    return _apply(claims, overrides)


def gitlab_claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a GitLab CI `id_tokens` token for a pipeline on main of
    my-group/my-project; a None override removes the claim."""
    sha = "714a629c0b401fdce83e847fc9589983fc6f46bc"
    claims: dict[str, Any] = {
        "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
        "namespace_id": "72",
        "namespace_path": "my-group",
        "project_id": "20",
        "job_project_id": "20",
        "project_path": "my-group/my-project",
        "user_id": "1",
        "user_login": "sample-user",
        "user_email": "sample-user@example.com",
        "user_access_level": "maintainer",
        "pipeline_id": "574",
        "pipeline_source": "push",
        "job_id": "302",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "environment_action": "start",
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
        "sha": sha,
        "project_visibility": "private",
        "ci_config_ref_uri": "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
        "ci_config_sha": sha,
    }
    return _apply(claims, overrides)


@pytest.fixture
def oidc() -> Iterator[OidcIssuer]:
    """A started local OIDC issuer (fresh keys per test), stopped afterwards."""
    with OidcIssuer() as issuer:
        yield issuer
