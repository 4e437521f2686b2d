"""The one HTTP layer of signer (TSA client, Vault/OpenBao): pooled sessions, one retry policy,
a per-request timeout and a total time budget that no server can stretch, redacted URLs.

A socket timeout bounds each read, not a whole request: a server that trickles one byte per
second keeps a plain `requests` call alive for ever. So every attempt runs under a watchdog
that shuts its sockets down when the call's budget is spent.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from signer.redact import redact_url

__all__ = [
    "HttpClient",
    "HttpFailedError",
    "HttpResponse",
    "HttpUnavailableError",
    "RetryPolicy",
    "is_retryable_status",
    "split_credentials",
]

#: Answers worth asking again: timeout, rate limit, and the transient server errors.
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT: Final = 5.0
_CHUNK: Final = 64 * 1024


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently one call is made: attempts, backoff with full jitter, and time limits."""

    attempts: int = 3
    #: The first backoff's upper bound; it doubles per retry up to `max_backoff`.
    backoff: float = 0.5
    max_backoff: float = 8.0
    #: Seconds for each connect and each read of one attempt.
    timeout: float = 10.0
    #: Seconds for the whole call, every attempt and pause included; never exceeded.
    budget: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout <= 0 or self.budget <= 0 or self.backoff < 0:
            raise ValueError(f"unusable retry policy {self}")

    def pause(self, retry: int) -> float:
        """Full jitter (a uniform pause up to the exponential bound): clients that failed
        together do not come back together."""
        bound = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        return random.uniform(0, bound)  # noqa: S311 - jitter, not secrecy


@dataclass(frozen=True)
class HttpResponse:
    """A final answer: one that is not retried (any status outside RETRY_STATUSES)."""

    status: int
    reason: str
    body: bytes
    headers: Mapping[str, str]


class HttpFailedError(Exception):
    """A call that cannot succeed as made (TLS, a malformed request, an oversized answer)."""

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        #: "tls", "too-large" or "request"
        self.kind = kind


class HttpUnavailableError(Exception):
    """Every attempt failed on transport or a transient status, or the budget ran out."""

    def __init__(
        self,
        problem: str,
        *,
        attempts: int,
        budget_spent: bool,
        last: HttpResponse | None,
    ) -> None:
        self.problem = problem
        self.attempts = attempts
        #: The problem and the number of attempts, as shown to users.
        self.reason = f"{problem} ({_attempts(attempts)})"
        super().__init__(self.reason)
        self.budget_spent = budget_spent
        #: The last transient answer (its body explains a 503), when there was one.
        self.last = last


class _Watch:
    """The sockets of one attempt, shut down together when its deadline passes."""

    def __init__(self) -> None:
        self.fired = False
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def add(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            fired = self.fired
        if fired:
            _shut(connection)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread
        except OSError:
            pass  # already closed


_current = threading.local()


def _watch_connection(connection: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_current, "watch", None)
    if watch is not None:
        watch.add(connection)


class _Watched:
    """Hands each connection to the call's watchdog once it is connected (urllib3 connects
    before it sends), so the watchdog can reach the socket."""

    def getresponse(self) -> Any:
        _watch_connection(self)  # type: ignore[arg-type]
        return super().getresponse()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_connection(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: Final = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose connections the current attempt's watchdog can shut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Through an HTTP(S) proxy too (`HTTPS_PROXY`): the budget holds either way."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def split_credentials(url: str) -> tuple[str, HTTPBasicAuth | None]:
    """The URL without its user information, and that information as HTTP Basic auth: the
    password travels in a header, never in the request line or in any message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, HTTPBasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))


def _attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"


class HttpClient:
    """One pooled session (sized for `concurrency` parallel calls) and one retry policy."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        concurrency: int = 1,
        hosts: int = 1,
        headers: Mapping[str, str] | None = None,
        verify: str | bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._verify = verify
        self._sleep = sleep
        self._session = requests.Session()
        adapter = _WatchedAdapter(
            pool_connections=max(1, hosts), pool_maxsize=max(1, concurrency), max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if headers:
            self._session.headers.update(headers)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        json: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: AuthBase | None = None,
        max_bytes: int = 16 << 20,
    ) -> HttpResponse:
        """The first final answer, retrying transport errors and transient statuses with
        backoff; raises HttpUnavailableError when attempts or the budget run out."""
        policy = self.policy
        deadline = time.monotonic() + policy.budget
        problem = "not asked"
        last: HttpResponse | None = None
        made = 0
        for attempt in range(policy.attempts):
            if attempt:
                pause = policy.pause(attempt)
                if time.monotonic() + pause >= deadline:
                    return self._give_up(problem, made, last, budget_spent=True)
                self._sleep(pause)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._give_up(problem, made, last, budget_spent=True)
            made += 1
            read = min(policy.timeout, remaining)
            connect = min(CONNECT_TIMEOUT, read)
            try:
                with self._watchdog(remaining) as watch:
                    try:
                        answer = self._once(
                            method, url, json, data, headers, auth, (connect, read), max_bytes
                        )
                    except (requests.Timeout, urllib3.exceptions.TimeoutError):
                        if watch.fired or read < policy.timeout:
                            return self._give_up(None, made, last, budget_spent=True)
                        problem = f"timed out after {read:g} s"
                        continue
                    except (
                        requests.ConnectionError,
                        requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.HTTPError,
                        OSError,
                    ) as exc:
                        if watch.fired:
                            return self._give_up(None, made, last, budget_spent=True)
                        if isinstance(exc, requests.exceptions.SSLError):
                            raise HttpFailedError(
                                f"TLS to {redact_url(url)} failed", kind="tls"
                            ) from None
                        refused = "refused" in str(exc).lower()
                        problem = "connection refused" if refused else "connection failed"
                        continue
            except requests.RequestException as exc:
                raise HttpFailedError(
                    f"request to {redact_url(url)} failed ({type(exc).__name__})", kind="request"
                ) from None
            if watch.fired:
                # sockets shut mid-answer can read as a short, complete one: never use it
                return self._give_up(None, made, last, budget_spent=True)
            if not is_retryable_status(answer.status):
                return answer
            last = answer
            problem = f"HTTP {answer.status}"
        return self._give_up(problem, made, last, budget_spent=False)

    def _give_up(
        self, problem: str | None, made: int, last: HttpResponse | None, *, budget_spent: bool
    ) -> HttpResponse:
        """Raise the final error: `problem` is the last attempt's, None when the budget ended
        that attempt itself."""
        budget = f"the time budget of {self.policy.budget:g} s"
        if problem is None:
            reason = f"no complete answer within {budget}"
        elif budget_spent:
            reason = f"{problem}; {budget} leaves no room for another attempt"
        else:
            reason = problem
        raise HttpUnavailableError(
            reason,
            attempts=made,
            budget_spent=budget_spent,
            last=last,
        )

    @contextmanager
    def _watchdog(self, seconds: float) -> Iterator[_Watch]:
        watch = _Watch()
        timer = threading.Timer(seconds, watch.fire)
        timer.daemon = True
        _current.watch = watch
        timer.start()
        try:
            yield watch
        finally:
            timer.cancel()
            timer.join()
            _current.watch = None

    def _once(
        self,
        method: str,
        url: str,
        json: object,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        auth: AuthBase | None,
        timeout: tuple[float, float],
        max_bytes: int,
    ) -> HttpResponse:
        with self._session.request(
            method,
            url,
            json=json,
            data=data,
            headers=dict(headers) if headers else None,
            auth=auth,
            timeout=timeout,
            verify=self._verify,
            stream=True,
            allow_redirects=False,
        ) as response:
            if is_retryable_status(response.status_code):
                limit = min(max_bytes, _CHUNK)  # enough to explain the error; the rest is noise
            else:
                limit = max_bytes
            body = bytearray()
            while len(body) <= limit:
                chunk = response.raw.read(_CHUNK, decode_content=True)
                if not chunk:
                    break
                body += chunk
            if len(body) > limit and limit == max_bytes:
                raise HttpFailedError(
                    f"{redact_url(url)}: answer larger than {max_bytes} bytes", kind="too-large"
                )
            return HttpResponse(
                status=response.status_code,
                reason=response.reason or "",
                body=bytes(body[:limit]),
                headers=dict(response.headers),
            )
