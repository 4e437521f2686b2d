"""What a verified token says about the job: its issuer and its normalised claims, never `sub`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sealgate.service.config import Provider


@dataclass(frozen=True)
class Identity:
    """A CI job as a verified token describes it. Claims are strings (normalised), so a grant
    compares like with like across providers; the token itself is never kept."""

    #: IssuerConfig.name
    issuer_name: str
    #: the exact `iss`
    issuer: str
    provider: Provider
    claims: dict[str, str] = field(default_factory=dict)
    jti: str = ""
    issued_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def as_actor(self) -> dict[str, object]:
        """The audit record's `actor`: issuer and normalised claims."""
        return {"issuer": self.issuer, "claims": dict(sorted(self.claims.items()))}
