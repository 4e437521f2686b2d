"""Requests per hour per grant, counted from the store without a count query per request; and
the tokens this process has spent, so the replay pre-check needs no database read either.

The store's count of a grant's signed requests in the last hour is read at most once per
`refresh` seconds; requests this process lets through since then are added to it, and a request
reserves its place before the HSM is called (released if it is not signed), so within one process
the limit holds exactly, also under concurrency. Other replicas' requests are seen at the next
refresh: across replicas a grant may go over by what they signed in that last second.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sealgate.service.config import MAX_LEEWAY, GrantConfig, KeyConfig
from sealgate.service.errors import ServiceError
from sealgate.service.store.base import Store

WINDOW = dt.timedelta(hours=1)
#: Seconds a count read from the store is trusted before it is read again.
REFRESH = 1.0


class RateLimitedError(ServiceError):
    """429: the grant's requests per hour are spent; `retry_after` says when to try again."""

    status = 429
    code = "rate-limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Count:
    stored: int = 0
    read_at: float = -math.inf
    #: Reserved and not finished (not in the store yet, whatever the next read says).
    inflight: int = 0
    #: Signed by this process since the store was read (in the store from the next read on).
    signed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RateLimiter:
    """`reserve()` before signing (429 when the grant is spent), then `signed()` once the record
    is stored or `release()` when the request was not signed."""

    def __init__(
        self,
        store: Store,
        *,
        refresh: float = REFRESH,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.clock = clock
        self.monotonic = monotonic
        self._counts: dict[tuple[str, str], _Count] = {}
        self._lock = threading.Lock()

    def _count(self, key: KeyConfig, grant: GrantConfig) -> _Count:
        with self._lock:
            return self._counts.setdefault((key.name, grant.name), _Count())

    def reserve(self, key: KeyConfig, grant: GrantConfig) -> None:
        limit = grant.max_requests_per_hour
        count = self._count(key, grant)
        with count.lock:
            now = self.monotonic()
            if now - count.read_at >= self.refresh:
                since = self.clock() - WINDOW
                count.stored = self.store.count_recent(key.name, grant.name, since)
                count.read_at, count.signed = now, 0
            used = count.stored + count.signed + count.inflight
            if used >= limit:
                raise RateLimitedError(
                    f"grant {grant.name!r} of key {key.name!r}: {used} requests in the last "
                    f"hour, the grant allows {limit}",
                    retry_after=max(1, math.ceil(WINDOW.total_seconds() / max(1, limit))),
                )
            count.inflight += 1

    def signed(self, key: KeyConfig, grant: GrantConfig) -> None:
        """The reserved request's record is stored (a read before this may count it twice:
        for at most `refresh` seconds the limit errs on the strict side)."""
        count = self._count(key, grant)
        with count.lock:
            count.inflight = max(0, count.inflight - 1)
            count.signed += 1

    def release(self, key: KeyConfig, grant: GrantConfig) -> None:
        """The reserved request was not signed (HSM down, a replay): its place is free again."""
        count = self._count(key, grant)
        with count.lock:
            count.inflight = max(0, count.inflight - 1)


class SpentTokens:
    """The (iss, jti) pairs this process stored, kept until their token has expired: the
    replay pre-check without a database read per request. The store's unique constraint stays
    the authority: a replay sent to another replica is refused there, after the HSM work."""

    def __init__(self, capacity: int = 200_000, *, now: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.now = now
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def seen(self, issuer: str, jti: str) -> bool:
        with self._lock:
            return (issuer, jti) in self._until

    def add(self, issuer: str, jti: str, expires_at: dt.datetime | None) -> None:
        """Remember a spent token until it expires (a verifier refuses it by then anyway)."""
        until = (expires_at.timestamp() if expires_at else self.now() + 3600) + MAX_LEEWAY
        with self._lock:
            self._until[(issuer, jti)] = until
            if len(self._until) > self.capacity:
                self._purge()

    def _purge(self) -> None:
        now = self.now()
        for pair in [p for p, until in self._until.items() if until < now]:
            del self._until[pair]
        while len(self._until) > self.capacity:  # still full: forget the oldest (the store holds)
            del self._until[next(iter(self._until))]
