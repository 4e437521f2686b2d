"""The one HTTP layer (signer.http): retries, a total time budget no server can stretch, pooling.

The hostile servers here are real sockets: one that accepts and never answers, one that
trickles its headers a byte at a time (each read is quick, so a socket timeout never fires),
and one that answers 503 for ever. The tests assert the errors and their codes, never times.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509

from signer.errors import BackendUnavailableError
from signer.http import HttpClient, HttpUnavailableError, RetryPolicy
from signer.timestamp import TimestampClient, TsaSettings
from tests.components.tsa import LocalTsa, TsaPki


@contextmanager
def _server(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 running `handle` per connection; every thread ends with it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)
            worker = threading.Thread(target=handle, args=(conn, stop), daemon=True)
            threads.append(worker)
            worker.start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for conn in accepted:
            conn.close()
        for worker in threads:
            worker.join(5)
        assert not acceptor.is_alive() and not any(t.is_alive() for t in threads)


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept, read the request, and never answer."""
    conn.settimeout(0.1)
    while not stop.is_set():
        try:
            if not conn.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def _trickle(conn: socket.socket, stop: threading.Event) -> None:
    """A status line, then one header byte every 50 ms for ever: no single read ever waits."""
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stop.wait(0.05):
            conn.sendall(b"a")
    except OSError:
        return


def _unavailable(conn: socket.socket, stop: threading.Event) -> None:
    body = b'{"errors":["sealed"]}'
    try:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
    except OSError:
        return


def _tsa_settings(url: str, tsa_pki: TsaPki, **policy: float) -> TsaSettings:
    roots = tuple(x509.load_pem_x509_certificates(tsa_pki.root_pem.read_bytes()))
    return TsaSettings(urls=(url,), roots=roots, **policy)  # type: ignore[arg-type]


def test_the_budget_holds_against_a_tsa_that_accepts_and_never_answers(tsa_pki: TsaPki) -> None:
    # per request 60 s and 5 retries: only the 1 s budget can end this call early
    with _server(_silent) as url:
        settings = _tsa_settings(url, tsa_pki, timeout=60.0, retries=5, budget=1.0)
        with TimestampClient(settings) as client, pytest.raises(BackendUnavailableError) as caught:
            client.stamp(b"signature value", "sha256")
    error = caught.value
    assert (error.code, error.exit_code, error.field) == ("tsa-unreachable", 3, "tsa_urls")
    assert f"{url}: no complete answer within the time budget of 1 s (1 attempt)" in (error.message)


def test_the_budget_holds_against_a_server_that_trickles_its_headers() -> None:
    """Each byte comes well inside the read timeout: only the watchdog stops this one."""
    with _server(_trickle) as url, HttpClient(RetryPolicy(timeout=5.0, budget=1.0)) as client:
        with pytest.raises(HttpUnavailableError) as caught:
            client.request("GET", url)
    assert caught.value.budget_spent
    assert caught.value.reason == "no complete answer within the time budget of 1 s (1 attempt)"


def test_a_transient_status_is_retried_with_jittered_backoff_then_reported() -> None:
    pauses: list[float] = []
    policy = RetryPolicy(attempts=4, backoff=0.2, max_backoff=0.3, timeout=5.0, budget=60.0)
    with _server(_unavailable) as url, HttpClient(policy, sleep=pauses.append) as client:
        with pytest.raises(HttpUnavailableError) as caught:
            client.request("POST", url, json={"input": "x"})
    assert caught.value.reason == "HTTP 503 (4 attempts)"
    assert not caught.value.budget_spent
    assert caught.value.last is not None and caught.value.last.body == b'{"errors":["sealed"]}'
    # full jitter: each pause lies between 0 and its doubling bound, capped at max_backoff
    assert len(pauses) == 3
    assert all(0 <= p <= bound for p, bound in zip(pauses, (0.2, 0.3, 0.3), strict=True))


def test_a_budget_too_small_for_the_next_pause_stops_without_sleeping() -> None:
    pauses: list[float] = []
    policy = RetryPolicy(attempts=50, backoff=1000.0, max_backoff=1000.0, budget=0.5)
    with _server(_unavailable) as url, HttpClient(policy, sleep=pauses.append) as client:
        with pytest.raises(HttpUnavailableError) as caught:
            client.request("GET", url)
    # a pause that would end past the deadline is not taken (unless jitter drew a tiny one)
    assert caught.value.budget_spent or caught.value.attempts == 50
    assert "HTTP 503" in caught.value.reason


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"timeout": 0}, {"budget": -1}])
def test_an_unusable_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="unusable retry policy"):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_a_refused_connection_is_retried_then_reported_with_its_count() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with HttpClient(RetryPolicy(attempts=3), sleep=lambda _s: None) as client:
        with pytest.raises(HttpUnavailableError) as caught:
            client.request("GET", f"http://127.0.0.1:{port}/")
    assert caught.value.reason == "connection refused (3 attempts)"


def test_a_credential_url_is_redacted_in_every_tsa_message(tsa_pki: TsaPki) -> None:
    with _server(_silent) as url:
        secret_url = url.replace("http://", "http://user:pa55word-x@") + "?token=t0ken-value"
        settings = _tsa_settings(secret_url, tsa_pki, timeout=0.5, retries=0, budget=5.0)
        with TimestampClient(settings) as client, pytest.raises(BackendUnavailableError) as caught:
            client.stamp(b"value", "sha256")
    text = caught.value.message
    assert "pa55word-x" not in text and "t0ken-value" not in text and "user" not in text
    assert "token=REDACTED" in text


def test_one_pooled_connection_serves_a_sequential_batch(tsa: LocalTsa, tsa_pki: TsaPki) -> None:
    """Control: the real TSA answers, tokens verify, and the session keeps its connection."""
    before = tsa.connections
    settings = _tsa_settings(tsa.url, tsa_pki, concurrency=1)
    with TimestampClient(settings) as client:
        tokens = [client.stamp(hashlib.sha256(bytes([i])).digest(), "sha256") for i in range(5)]
    assert len({t.serial for t in tokens}) == 5
    assert tsa.connections - before == 1


def test_the_watchdog_leaves_no_thread_behind() -> None:
    alive = threading.active_count()
    with _server(_silent) as url, HttpClient(RetryPolicy(timeout=0.3, attempts=2)) as client:
        with pytest.raises(HttpUnavailableError):
            client.request("GET", url)
    deadline = time.monotonic() + 5
    while threading.active_count() > alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= alive


def test_the_budget_holds_through_an_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trickling proxy (`HTTP_PROXY`) is stopped by the same watchdog as a server."""
    with _server(_trickle) as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy)
        with HttpClient(RetryPolicy(timeout=5.0, budget=1.0)) as client:
            with pytest.raises(HttpUnavailableError) as caught:
                client.request("GET", "http://tsa.example.invalid/")
    assert caught.value.reason == "no complete answer within the time budget of 1 s (1 attempt)"


def _endless_body(conn: socket.socket, stop: threading.Event) -> None:
    """200 with no length, then bytes until the client hangs up."""
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"\0" * 65536)
    except OSError:
        return


def _redirect(conn: socket.socket, stop: threading.Event) -> None:
    try:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.invalid/\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        return


@pytest.mark.parametrize(
    ("handler", "reason"),
    [(_endless_body, "answer too large to be a timestamp response"), (_redirect, "HTTP 307")],
)
def test_a_tsa_answer_that_is_endless_or_a_redirect_is_refused_at_once(
    tsa_pki: TsaPki, handler: Callable[[socket.socket, threading.Event], None], reason: str
) -> None:
    with _server(handler) as url:
        settings = _tsa_settings(url, tsa_pki, timeout=5.0, retries=3, budget=20.0)
        with TimestampClient(settings) as client, pytest.raises(BackendUnavailableError) as caught:
            client.stamp(b"value", "sha256")
    assert caught.value.code == "tsa-bad-response"
    assert f"{url}: {reason}" in caught.value.message
