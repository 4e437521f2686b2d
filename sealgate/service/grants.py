"""Which grant of a key lets a verified job sign, and what `serve --check` refuses in a grant.

Every listed claim must match; a missing claim never does. Release keys also refuse the events
that run someone else's code with the repository's identity, and self-hosted runners, unless
the grant allows them by name: at request time, not only in `--check`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sealgate.service.auth.claims import PROVIDER_CLAIMS
from sealgate.service.auth.identity import Identity
from sealgate.service.config import ClaimMatcher, GrantConfig, KeyConfig, Provider, ServiceConfig
from sealgate.service.errors import GrantError, ServiceConfigError

#: Events whose job runs with the repository's token but on behalf of an outsider: a fork's pull
#: request (pull_request_target), a workflow another one triggered (workflow_run), a comment
#: anybody can post (issue_comment). GitLab: merge-request and external pull-request pipelines.
RISKY_EVENTS: dict[Provider, tuple[str, frozenset[str]]] = {
    "github": ("event_name", frozenset({"pull_request_target", "workflow_run", "issue_comment"})),
    "gitlab": (
        "pipeline_source",
        frozenset({"merge_request_event", "external_pull_request_event"}),
    ),
}
#: The runner_environment value of the provider's own runners; anything else is self-hosted.
HOSTED_RUNNER: dict[Provider, str] = {"github": "github-hosted", "gitlab": "gitlab-hosted"}
#: The claims that pin a repository/project by an id that a rename or a re-creation cannot take.
IMMUTABLE_IDS: dict[Provider, tuple[str, ...]] = {
    "github": ("repository_id", "repository_owner_id"),
    "gitlab": ("project_id", "job_project_id"),
}
#: The claims that pin which workflow/pipeline definition runs.
WORKFLOW_PINS: dict[Provider, tuple[str, ...]] = {
    "github": ("job_workflow_ref", "job_workflow_sha"),
    "gitlab": ("ci_config_ref_uri", "ci_config_sha"),
}
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]+[:)]")
#: A repeated group of one repeated atom: (a+)+, (\w*)*, ([a-z]+){2,} backtrack exponentially.
_NESTED_QUANTIFIER = re.compile(r"\((?:\?:)?(?:\\.|\[[^\]]*\]|[^()\\])[+*]\)[+*{]")


# --- matchers -----------------------------------------------------------------------------------
def matcher_error(matcher: ClaimMatcher) -> str | None:
    """Why a matcher cannot be used, or None. Globs: `*` within one `/`-segment only (`**`
    refused); regexes: `^...$`, no inline flags, no nested quantifiers, and they must compile."""
    if not matcher.values:
        return f"claim {matcher.claim}: an empty {matcher.kind} matcher matches nothing"
    for value in matcher.values:
        if matcher.kind == "glob" and "**" in value:
            return (
                f"claim {matcher.claim}: glob {value!r} has '**'; '*' matches within one "
                "'/'-segment and there is no multi-segment wildcard"
            )
        if matcher.kind == "regex":
            if not value.startswith("^") or not value.endswith("$") or value.endswith("\\$"):
                return f"claim {matcher.claim}: regex {value!r} must be anchored: ^...$"
            if _INLINE_FLAGS.search(value):
                return f"claim {matcher.claim}: regex {value!r} has inline flags; none are allowed"
            if _NESTED_QUANTIFIER.search(value):
                return (
                    f"claim {matcher.claim}: regex {value!r} repeats a repeated group, which "
                    "can take exponential time"
                )
            try:
                re.compile(value)
            except re.error as exc:
                return f"claim {matcher.claim}: regex {value!r} does not compile: {exc}"
    return None


def check_matcher(matcher: ClaimMatcher, *, where: str) -> None:
    problem = matcher_error(matcher)
    if problem:
        raise ServiceConfigError(f"{where}: {problem}", code="bad-matcher", field=matcher.claim)


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` is any run of characters other than `/`; everything else is literal."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(matcher: ClaimMatcher, value: str) -> bool:
    if matcher_error(matcher):  # a matcher that slipped past the loader matches nothing
        return False
    if matcher.kind in {"exact", "one_of"}:
        return value in matcher.values
    if matcher.kind == "glob":
        return any(_glob(pattern).fullmatch(value) for pattern in matcher.values)
    if matcher.kind == "regex":
        return any(_regex(pattern).fullmatch(value) for pattern in matcher.values)
    return False


def describe(matcher: ClaimMatcher) -> str:
    """What a matcher wants, for the refusal message."""
    values = matcher.values
    if matcher.kind == "exact" and len(values) == 1:
        return _show(values[0])
    if matcher.kind in {"exact", "one_of"}:
        return "one of " + ", ".join(_show(value) for value in values)
    if matcher.kind == "glob":
        return "a match of glob " + " or ".join(_show(value) for value in values)
    return "a match of regex " + " or ".join(_show(value) for value in values)


def _show(value: str, limit: int = 120) -> str:
    """A claim value for a message: quoted, with control characters escaped, cut short."""
    cut = value if len(value) <= limit else value[:limit] + "..."
    return "'" + cut.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


# --- matching a request --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Miss:
    grant: GrantConfig
    passed: int
    message: str
    field: str


def _first_miss(key: KeyConfig, grant: GrantConfig, identity: Identity) -> _Miss | None:
    """None if the grant lets `identity` sign with `key`, else its first failing check."""
    where = f"grant {grant.name!r}"
    if grant.issuer != identity.issuer_name:
        return _Miss(
            grant, 0,
            f"{where}: the token is from issuer {identity.issuer_name!r}, the grant trusts "
            f"{grant.issuer!r}",
            "iss",
        )  # fmt: skip
    for passed, matcher in enumerate(grant.claims, start=1):
        value = identity.claims.get(matcher.claim)
        if value is None:
            return _Miss(
                grant, passed,
                f"{where}: claim {matcher.claim} is missing, the grant wants {describe(matcher)}",
                matcher.claim,
            )  # fmt: skip
        if not matches(matcher, value):
            return _Miss(
                grant, passed,
                f"{where}: claim {matcher.claim} is {_show(value)}, the grant wants "
                f"{describe(matcher)}",
                matcher.claim,
            )  # fmt: skip
    if key.release:
        return _release_miss(key, grant, identity, len(grant.claims) + 1)
    return None


def _release_miss(
    key: KeyConfig, grant: GrantConfig, identity: Identity, passed: int
) -> _Miss | None:
    where = f"grant {grant.name!r}"
    claim, risky = RISKY_EVENTS[identity.provider]
    event = identity.claims.get(claim)
    if event is None:
        return _Miss(
            grant, passed,
            f"{where}: claim {claim} is missing; release key {key.name!r} needs it to refuse "
            "risky events",
            claim,
        )  # fmt: skip
    if event.lower() in risky and event not in grant.allow_events:
        return _Miss(
            grant, passed,
            f"{where}: claim {claim} is {_show(event)}; release key {key.name!r} refuses it "
            "unless the grant lists it in allow_events",
            claim,
        )  # fmt: skip
    runner = identity.claims.get("runner_environment")
    if runner != HOSTED_RUNNER[identity.provider] and not grant.allow_self_hosted:
        shown = "missing" if runner is None else f"is {_show(runner)}"
        return _Miss(
            grant, passed,
            f"{where}: claim runner_environment {shown}; release key {key.name!r} refuses "
            "self-hosted runners unless the grant sets allow_self_hosted",
            "runner_environment",
        )  # fmt: skip
    return None


def match_grant(key: KeyConfig, identity: Identity) -> GrantConfig:
    """The first grant of `key` that lets `identity` sign. GrantError (403) otherwise, naming
    the first failing claim of the grant that came closest (the most checks passed)."""
    if not key.grants:
        raise GrantError(
            f"key {key.name!r} has no grants: nobody may sign with it", code="no-grant"
        )
    misses: list[_Miss] = []
    for grant in key.grants:
        miss = _first_miss(key, grant, identity)
        if miss is None:
            return grant
        misses.append(miss)
    closest = max(misses, key=lambda miss: miss.passed)  # max keeps the first of equals
    raise GrantError(
        f"key {key.name!r}: no grant matches; {closest.message}", code="no-grant",
        field=closest.field,
    )  # fmt: skip


# --- serve --check -------------------------------------------------------------------------------
def check_config(config: ServiceConfig) -> list[str]:
    """What `serve --check` refuses: grants that do not pin enough to say whose job may sign.
    Each finding names the file and line of the grant."""
    findings: list[str] = []
    release_uris = {key.uri for key in config.keys.values() if key.release}
    if config.audit.key_uri and config.audit.key_uri in release_uris:
        findings.append(f"{config.source}: audit: key is a release key's URI; the audit log "
                        "needs a key of its own")  # fmt: skip
    for key in config.keys.values():
        if not key.grants:
            findings.append(f"{key.source or config.source}: key {key.name!r} has no grants")
        for grant in key.grants:
            findings += [
                f"{grant.source or config.source}: key {key.name!r} grant {grant.name!r}: {text}"
                for text in _grant_findings(config, key, grant)
            ]
    return findings


def _grant_findings(config: ServiceConfig, key: KeyConfig, grant: GrantConfig) -> list[str]:
    issuer = config.issuer_named(grant.issuer)
    if issuer is None:
        known = ", ".join(repr(i.name) for i in config.issuers) or "none"
        return [f"issuer {grant.issuer!r} is not configured (issuers: {known})"]
    provider = issuer.provider
    found: list[str] = []
    claims = {matcher.claim: matcher for matcher in grant.claims}
    for matcher in grant.claims:
        if matcher.claim == "sub":
            found.append(
                "matches sub, whose format the providers change; match the normalised "
                "claims (repository_id, ref, job_workflow_ref, ...)"
            )
        elif matcher.claim not in PROVIDER_CLAIMS[provider]:
            found.append(
                f"claim {matcher.claim!r} is not a {provider} claim the service reads, so the "
                f"grant never matches ({', '.join(sorted(PROVIDER_CLAIMS[provider]))})"
            )
        problem = matcher_error(matcher)
        if problem:
            found.append(problem)
    if not _pinned(claims, IMMUTABLE_IDS[provider]):
        found.append(
            "no immutable id pinned exactly: match "
            + " or ".join(IMMUTABLE_IDS[provider])
            + " (names can be renamed and re-registered)"
        )
    if not _pinned(claims, WORKFLOW_PINS[provider], any_kind=True):
        found.append("no pinned workflow definition: match " + " or ".join(WORKFLOW_PINS[provider]))
    if key.release:
        found += _release_findings(provider, grant, claims)
    return found


def _pinned(
    claims: dict[str, ClaimMatcher], names: Sequence[str], *, any_kind: bool = False
) -> bool:
    """One of `names` is matched, exactly (an id) or by any matcher (a workflow ref glob)."""
    return any(
        name in claims and (any_kind or claims[name].kind in {"exact", "one_of"}) for name in names
    )


def _release_findings(
    provider: Provider, grant: GrantConfig, claims: dict[str, ClaimMatcher]
) -> list[str]:
    """A release grant that names a risky event or a self-hosted runner without allowing it
    would never match there: that is a mistake in the file, not a policy."""
    claim, risky = RISKY_EVENTS[provider]
    found: list[str] = []
    event_matcher = claims.get(claim)
    if event_matcher is not None:
        for event in sorted(risky - set(grant.allow_events)):
            if matches(event_matcher, event):
                found.append(
                    f"matches {claim} {event!r}, which a release key refuses; list it in "
                    "allow_events to allow it explicitly, or stop matching it"
                )
    runner = claims.get("runner_environment")
    if runner is not None and not grant.allow_self_hosted and matches(runner, "self-hosted"):
        found.append(
            "matches runner_environment 'self-hosted', which a release key refuses; set "
            "allow_self_hosted to allow it explicitly"
        )
    unknown = sorted(set(grant.allow_events) - risky)
    if unknown:
        found.append(
            f"allow_events {', '.join(unknown)}: not events a release key refuses "
            f"({', '.join(sorted(risky))})"
        )
    return found
