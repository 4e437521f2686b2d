"""The job's OIDC token for the signing service: which source wins, GitHub's token endpoint as
a real HTTP peer (a local server speaking its protocol), and that no message holds a token."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sealgate.errors import SealgateError
from sealgate.service.idtoken import TokenSource, job_token

AUD = "https://sign.example.test"


def fake_jwt(aud: object = AUD, **claims: object) -> str:
    """A JWT-shaped token (unsigned: the client never verifies it, the service does)."""

    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    payload: dict[str, object] = {"iss": "https://issuer.test", "jti": os.urandom(8).hex()}
    if aud is not None:
        payload["aud"] = aud
    payload.update(claims)
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJl"


@dataclass
class TokenEndpoint:
    """GitHub's ACTIONS_ID_TOKEN_REQUEST_URL, played on 127.0.0.1: checks the request token,
    answers {"value": JWT} minted for the audience asked (or what `answer` says)."""

    request_token: str = "ghs_request_token_0123456789"
    mint: Callable[[str], str] = fake_jwt
    answer: Callable[[str], tuple[int, bytes]] | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    minted: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token?api-version=2.0"

    def env(self) -> dict[str, str]:
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": self.url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token,
        }


@contextmanager
def start_endpoint(endpoint: TokenEndpoint) -> Iterator[TokenEndpoint]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            endpoint.seen.append(
                {"authorization": self.headers.get("Authorization"), "query": query}
            )
            audience = query.get("audience", [""])[0]
            if self.headers.get("Authorization") != f"bearer {endpoint.request_token}":
                status, body = 401, b'{"message": "bad request token"}'
            elif endpoint.answer is not None:
                status, body = endpoint.answer(audience)
            else:
                token = endpoint.mint(audience)
                endpoint.minted.append(token)
                status, body = 200, json.dumps({"count": 1, "value": token}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    endpoint.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def github() -> Iterator[TokenEndpoint]:
    with start_endpoint(TokenEndpoint()) as endpoint:
        yield endpoint


def _refusal(call: Callable[[], object]) -> SealgateError:
    with pytest.raises(SealgateError) as caught:
        call()
    return caught.value


def test_fixed_token_wins_over_github_and_gitlab(github: TokenEndpoint) -> None:
    fixed = fake_jwt()
    env = {"SEALGATE_ID_TOKEN": fixed, **github.env(), "MY_TOKEN": fake_jwt()}
    assert job_token(AUD, env, id_token_var="MY_TOKEN") == fixed
    assert github.seen == []  # the endpoint was not even asked
    assert not TokenSource(AUD, env).renewable  # one request per fixed token


def test_token_file_is_read_capped(tmp_path: Path) -> None:
    token = fake_jwt()
    path = tmp_path / "token"
    path.write_text(token + "\n")
    assert job_token(AUD, {"SEALGATE_ID_TOKEN_FILE": str(path)}) == token
    big = tmp_path / "big"
    big.write_bytes(b"a" * (65 * 1024))
    error = _refusal(lambda: job_token(AUD, {"SEALGATE_ID_TOKEN_FILE": str(big)}))
    assert error.code == "file-too-large" and error.exit_code == 2
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # would block a plain open() for ever
    error = _refusal(lambda: job_token(AUD, {"SEALGATE_ID_TOKEN_FILE": str(fifo)}))
    assert error.code == "not-a-file" and "FIFO" in error.message


def test_github_endpoint_gets_the_audience_and_the_request_token(github: TokenEndpoint) -> None:
    audience = "https://sign.example.test/a b&c=d"  # must arrive as one parameter, intact
    source = TokenSource(audience, github.env())
    assert source.renewable
    first, second = source.token(), source.token()
    assert first != second and [first, second] == github.minted  # a fresh token per call
    assert len(github.seen) == 2
    seen = github.seen[0]
    assert seen["authorization"] == f"bearer {github.request_token}"
    assert seen["query"] == {"api-version": ["2.0"], "audience": [audience]}


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (403, b'{"message": "no id-token permission"}', "id-token-refused", "id-token: write"),
        (200, b"<html>proxy login</html>", "bad-id-token", '{"value"'),
        (200, b'{"value": 42}', "bad-id-token", "not a string"),
        (200, b'{"value": "not-a-jwt"}', "bad-id-token", "does not hold a JWT"),
    ],
)
def test_github_endpoint_refusals_and_garbage(
    status: int, body: bytes, code: str, words: str
) -> None:
    with start_endpoint(TokenEndpoint(answer=lambda _aud: (status, body))) as endpoint:
        error = _refusal(lambda: job_token(AUD, endpoint.env()))
        assert error.code == code and error.exit_code == 2, error.diagnostics()
        assert words in error.diagnostics()
        assert endpoint.request_token not in error.diagnostics()


def test_github_endpoint_down_is_exit_3() -> None:
    with start_endpoint(TokenEndpoint()) as endpoint:
        env = endpoint.env()
    error = _refusal(lambda: job_token(AUD, env))  # the server is gone: connection refused
    assert error.code == "id-token-unavailable" and error.exit_code == 3
    assert "connection refused" in error.message


def test_github_endpoint_over_plain_http_elsewhere_is_refused() -> None:
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "http://token.example.invalid/x?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "secret-request-token",
    }
    error = _refusal(lambda: job_token(AUD, env))
    assert error.code == "insecure-url" and "in clear" in error.message
    assert "secret-request-token" not in error.diagnostics()


def test_github_request_url_without_its_token() -> None:
    error = _refusal(lambda: job_token(AUD, {"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/y"}))
    assert error.code == "no-id-token" and "id-token: write" in error.diagnostics()


def test_gitlab_id_tokens_variable_by_name() -> None:
    token = fake_jwt()
    assert job_token(AUD, {"SIGNING_TOKEN": token}, id_token_var="SIGNING_TOKEN") == token
    # the default name is SEALGATE_ID_TOKEN, the variable `id_tokens:` declares
    assert job_token(AUD, {"SEALGATE_ID_TOKEN": token}) == token


def test_missing_token_says_what_to_set() -> None:
    error = _refusal(lambda: job_token(AUD, {}, id_token_var="SIGNING_TOKEN"))
    assert error.code == "no-id-token" and error.exit_code == 2
    text = error.diagnostics()
    assert "permissions: id-token: write" in text
    assert f"id_tokens: SEALGATE_ID_TOKEN: aud: {AUD}" in text
    assert "$SIGNING_TOKEN" in text


@pytest.mark.parametrize(
    "aud", ["https://other.example.test", ["https://other.example.test", "x"], "sigstore"]
)
def test_a_token_for_another_audience_is_never_sent(aud: object) -> None:
    token = fake_jwt(aud=aud)
    error = _refusal(lambda: job_token(AUD, {"SEALGATE_ID_TOKEN": token}))
    assert error.code == "id-token-audience" and error.exit_code == 2
    assert token not in error.diagnostics()
    assert job_token(AUD, {"SEALGATE_ID_TOKEN": fake_jwt(aud=["x", AUD])})  # control: listed


@pytest.mark.parametrize(
    "bad", ["", "   ", "abc", "a.b.c.d", "a.b\n.c", "ä.b.c", "a." * 40000 + "b"]
)
def test_what_is_not_a_jwt_is_refused_without_echoing_it(bad: str) -> None:
    error = _refusal(lambda: job_token(AUD, {"SEALGATE_ID_TOKEN_X": "", "MY": bad},
                                       id_token_var="MY"))  # fmt: skip
    if bad.strip():
        assert error.code == "bad-id-token"
        assert bad not in error.diagnostics()
    else:
        assert error.code == "no-id-token"
