"""service.yml as typed settings: issuers, keys with their grants, the audit log's own key.

The shapes below are the contract between the parts of the service; `load_config()` (in
`sealgate.service.configfile`) builds them from YAML and refuses unknown fields by file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Provider = Literal["github", "gitlab"]
MatcherKind = Literal["exact", "one_of", "glob", "regex"]

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
#: At most this much clock skew is forgiven on exp/iat/nbf (seconds).
MAX_LEEWAY = 30


@dataclass(frozen=True)
class IssuerConfig:
    """One OIDC issuer the service trusts, and the one audience its tokens must carry."""

    name: str
    provider: Provider
    #: The exact `iss` value (no trailing-slash or case folding).
    issuer: str
    #: One Sealgate-specific audience; the providers' defaults are refused.
    audience: str
    #: Where the JWKS is read from; None: discovered from the issuer's openid-configuration.
    jwks_url: str | None = None
    leeway: int = 30
    #: A token issued longer ago than this is refused even when not yet expired (seconds).
    max_token_age: int = 900
    #: Seconds between JWKS refreshes caused by an unknown `kid`.
    jwks_refresh_interval: float = 60.0
    algorithms: tuple[str, ...] = ("RS256", "ES256")


@dataclass(frozen=True)
class ClaimMatcher:
    """How one normalised claim must look: exact (default), one_of, a segment glob, a regex."""

    claim: str
    kind: MatcherKind
    values: tuple[str, ...]


@dataclass(frozen=True)
class GrantConfig:
    """Who may sign with a key: every listed claim must match the job's token."""

    name: str
    #: The IssuerConfig.name the token must come from.
    issuer: str
    claims: tuple[ClaimMatcher, ...]
    max_artifacts: int = 100
    max_requests_per_hour: int = 3600
    #: Events a release key refuses unless listed here (pull_request_target, workflow_run, ...).
    allow_events: tuple[str, ...] = ()
    allow_self_hosted: bool = False
    #: Where in service.yml the grant is, for messages (`service.yml line 40`).
    source: str = ""


@dataclass(frozen=True)
class KeyConfig:
    """A signing key the service holds credentials for, and who may use it."""

    name: str
    uri: str
    certificate: Path | None
    chain: tuple[Path, ...] = ()
    tsa_urls: tuple[str, ...] = ()
    tsa_roots: tuple[Path, ...] = ()
    team: str = ""
    #: Release keys get the strict `--check` rules (no risky events, no self-hosted runners).
    release: bool = False
    version: int = 1
    grants: tuple[GrantConfig, ...] = ()
    #: Open sessions kept to the HSM/KMS for this key: the bound on concurrent signing.
    pool_size: int = 4
    source: str = ""


@dataclass(frozen=True)
class AuditConfig:
    """The audit log's checkpoints: their own key (never a release key), how often, where to."""

    key_uri: str | None = None
    #: The C2SP checkpoint origin line (a schema-less URL-like name of this log).
    origin: str = "sealgate.local/audit"
    checkpoint_every: int = 1000
    checkpoint_interval: float = 300.0
    tsa_urls: tuple[str, ...] = ()
    tsa_roots: tuple[Path, ...] = ()
    #: A folder every checkpoint is also written to, so a copy leaves the database.
    export_dir: Path | None = None


@dataclass(frozen=True)
class ServiceConfig:
    source: str
    issuers: tuple[IssuerConfig, ...]
    keys: dict[str, KeyConfig]
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: The database URL when --db is not given.
    database: str = "sqlite:///sealgate-service.db"
    listen: str = "127.0.0.1:8443"

    def issuer_named(self, name: str) -> IssuerConfig | None:
        return next((i for i in self.issuers if i.name == name), None)
