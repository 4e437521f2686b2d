"""Grants against identities from real tokens: every listed claim must match, a missing claim
never does, globs stay inside one `/`-segment, regexes are whole-value, and release keys refuse
risky events and self-hosted runners unless the grant allows them by name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sealgate.service.auth.identity import Identity
from sealgate.service.auth.tokens import TokenVerifier
from sealgate.service.config import (
    AuditConfig,
    ClaimMatcher,
    GrantConfig,
    KeyConfig,
    MatcherKind,
    ServiceConfig,
)
from sealgate.service.errors import GrantError, ServiceConfigError
from sealgate.service.grants import check_config, check_matcher, match_grant, matches
from tests.components.oidc import OidcIssuer, github_claims, gitlab_claims

GH_WORKFLOW = "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main"
GL_CONFIG = "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main"


def m(claim: str, value: str | list[str], kind: MatcherKind = "exact") -> ClaimMatcher:
    values = tuple(value) if isinstance(value, list) else (value,)
    return ClaimMatcher(claim, "one_of" if isinstance(value, list) else kind, values)


def github_grant(name: str = "release-main", **fields: Any) -> GrantConfig:
    claims = (
        m("repository_id", "123456789"),
        m("job_workflow_ref", GH_WORKFLOW),
        m("ref", "refs/heads/main"),
    )
    values: dict[str, Any] = {
        "name": name,
        "issuer": "gh",
        "claims": claims,
        "source": "s.yml line 9",
    }
    values.update(fields)
    return GrantConfig(**values)


def gitlab_grant(name: str = "gl-main", **fields: Any) -> GrantConfig:
    claims = (
        m("project_id", "20"),
        m("ci_config_ref_uri", GL_CONFIG),
        m("ref", "main"),
        m("ref_protected", "true"),
    )
    values: dict[str, Any] = {
        "name": name,
        "issuer": "gl",
        "claims": claims,
        "source": "s.yml line 30",
    }
    values.update(fields)
    return GrantConfig(**values)


def key(*grants: GrantConfig, release: bool = False) -> KeyConfig:
    return KeyConfig(name="k", uri="pkcs11:token=T;object=K", certificate=None, grants=grants,
                     release=release)  # fmt: skip


@pytest.fixture
def verifier(oidc: OidcIssuer) -> TokenVerifier:
    return TokenVerifier([oidc.config("gh", "github"), oidc_gitlab_config(oidc)])


def oidc_gitlab_config(oidc: OidcIssuer) -> Any:
    # the same local issuer plays both providers: the second entry is told apart by audience
    return oidc.config("gl", "gitlab", audience="sealgate-gitlab", issuer=oidc.url + "/gitlab")


def github_job(oidc: OidcIssuer, verifier: TokenVerifier, **overrides: Any) -> Identity:
    return verifier.verify(oidc.mint(github_claims(**overrides)))


def gitlab_job(oidc: OidcIssuer, verifier: TokenVerifier, **overrides: Any) -> Identity:
    claims = {**gitlab_claims(**overrides), "iss": oidc.url + "/gitlab"}
    return verifier.verify(oidc.mint(claims, audience="sealgate-gitlab"))


def denied(key_config: KeyConfig, identity: Identity) -> GrantError:
    with pytest.raises(GrantError) as caught:
        match_grant(key_config, identity)
    assert caught.value.code == "no-grant" and caught.value.status == 403
    return caught.value


# --- the honest jobs and the near misses ---------------------------------------------------------
def test_a_good_github_job_gets_its_grant(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    grant = github_grant()
    assert match_grant(key(grant), github_job(oidc, verifier)) is grant


def test_another_repository_id_is_denied_naming_the_claim(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    error = denied(key(github_grant()), github_job(oidc, verifier, repository_id="999"))
    assert error.message.endswith(
        "grant 'release-main': claim repository_id is '999', the grant wants '123456789'"
    )
    assert error.field == "repository_id"


def test_a_renamed_lookalike_repository_is_denied(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    """The same name, re-created after a rename: only the id tells them apart."""
    job = github_job(oidc, verifier, repository_id="55555", repository="octo-org/octo-repo")
    assert denied(key(github_grant()), job).field == "repository_id"


def test_the_ref_mismatch_message_matches_the_issue(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    error = denied(key(github_grant()), github_job(oidc, verifier, ref="refs/heads/dev"))
    assert (
        "grant 'release-main': claim ref is 'refs/heads/dev', the grant wants 'refs/heads/main'"
        in (error.message)
    )


def test_an_unprotected_gitlab_ref_is_denied(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    grant = gitlab_grant()
    assert match_grant(key(grant), gitlab_job(oidc, verifier)) is grant
    error = denied(key(grant), gitlab_job(oidc, verifier, ref_protected=False))
    assert "claim ref_protected is 'false', the grant wants 'true'" in error.message


def test_a_fork_pipeline_is_told_apart_by_job_project_id(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    grant = gitlab_grant(claims=(*gitlab_grant().claims, m("job_project_id", "20")))
    job = gitlab_job(oidc, verifier, job_project_id="31337")
    assert denied(key(grant), job).field == "job_project_id"


def test_the_closest_grant_names_its_first_failing_claim(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    far = github_grant("far", claims=(m("repository_id", "1"), m("ref", "refs/heads/x")))
    near = github_grant("near")
    error = denied(key(far, near), github_job(oidc, verifier, ref="refs/heads/dev"))
    assert "grant 'near': claim ref is 'refs/heads/dev'" in error.message
    assert error.field == "ref"


def test_a_missing_claim_never_matches(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    for matcher in (m("environment", "*", "glob"), m("environment", "^.*$", "regex"),
                    m("environment", "")):  # fmt: skip
        grant = github_grant(claims=(m("repository_id", "123456789"), matcher))
        error = denied(key(grant), github_job(oidc, verifier, environment=None))
        assert "claim environment is missing" in error.message


def test_a_token_from_issuer_a_does_not_use_issuer_bs_grant(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    """The GitLab grant pins project_id 20; a GitHub job whose claims happen to carry the
    same names and values is still from the other issuer."""
    grant = gitlab_grant(claims=(m("ref", "refs/heads/main"),))
    error = denied(key(grant), github_job(oidc, verifier))
    assert "the token is from issuer 'gh', the grant trusts 'gl'" in error.message
    assert error.field == "iss"


def test_a_key_without_grants_lets_nobody_sign(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    assert "has no grants" in denied(key(), github_job(oidc, verifier)).message


def test_a_hostile_claim_value_is_escaped_in_the_reason(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    error = denied(key(github_grant()), github_job(oidc, verifier, ref="x\n::error::y\x1b[2J"))
    assert "\n" not in error.message and "\x1b" not in error.message
    assert "\\n::error::y" in error.message


# --- release keys: events and runners ------------------------------------------------------------
@pytest.mark.parametrize("event", ["pull_request_target", "workflow_run", "issue_comment"])
def test_a_release_key_refuses_risky_events(
    oidc: OidcIssuer, verifier: TokenVerifier, event: str
) -> None:
    job = github_job(oidc, verifier, event_name=event)
    error = denied(key(github_grant(), release=True), job)
    assert f"claim event_name is '{event}'; release key 'k' refuses it" in error.message
    assert error.field == "event_name"
    # allowed by name on the grant: the explicit opt-in matches
    allowed = github_grant(allow_events=(event,))
    assert match_grant(key(allowed, release=True), job) is allowed
    # a key that is not a release key has no such rule
    assert match_grant(key(github_grant()), job).name == "release-main"


def test_a_release_key_still_signs_a_push(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    grant = github_grant()
    assert match_grant(key(grant, release=True), github_job(oidc, verifier)) is grant


@pytest.mark.parametrize("event", ["merge_request_event", "external_pull_request_event"])
def test_a_release_key_refuses_gitlab_merge_request_pipelines(
    oidc: OidcIssuer, verifier: TokenVerifier, event: str
) -> None:
    job = gitlab_job(oidc, verifier, pipeline_source=event)
    assert denied(key(gitlab_grant(), release=True), job).field == "pipeline_source"
    assert (
        match_grant(key(gitlab_grant(), release=True), gitlab_job(oidc, verifier)).name == "gl-main"
    )


def test_a_release_key_refuses_self_hosted_runners(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    job = github_job(oidc, verifier, runner_environment="self-hosted")
    error = denied(key(github_grant(), release=True), job)
    assert "claim runner_environment is 'self-hosted'" in error.message
    assert error.field == "runner_environment"
    allowed = github_grant(allow_self_hosted=True)
    assert match_grant(key(allowed, release=True), job) is allowed
    gl_job = gitlab_job(oidc, verifier, runner_environment="self-hosted")
    assert denied(key(gitlab_grant(), release=True), gl_job).field == "runner_environment"


@pytest.mark.parametrize("claim", ["event_name", "runner_environment"])
def test_a_release_key_fails_closed_without_the_event_or_runner_claim(
    oidc: OidcIssuer, verifier: TokenVerifier, claim: str
) -> None:
    job = github_job(oidc, verifier, **{claim: None})
    assert denied(key(github_grant(), release=True), job).field == claim


def test_an_unknown_runner_value_counts_as_self_hosted(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    job = github_job(oidc, verifier, runner_environment="GitHub-Hosted")
    assert denied(key(github_grant(), release=True), job).field == "runner_environment"


# --- matchers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("refs/heads/release*", "refs/heads/release-1.2", True),
        ("refs/heads/release*", "refs/heads/release", True),
        ("refs/heads/release*", "refs/heads/release-evil/x", False),
        ("refs/heads/release*", "refs/heads/release/x", False),
        ("refs/heads/*", "refs/heads/a/b", False),
        ("refs/*/main", "refs/heads/main", True),
        ("refs/*/main", "refs/heads/x/main", False),
        ("refs/tags/v1.*", "refs/tags/v1x2", False),  # '.' is literal, not a regex dot
        ("refs/tags/v[0-9]", "refs/tags/v1", False),  # '[' is literal: no classes
        ("refs/tags/v?", "refs/tags/v1", False),  # '?' is literal
        ("*", "", True),
        ("*", "a/b", False),
        ("refs/heads/main", "refs/heads/main\n", False),
    ],
)
def test_segment_globs(pattern: str, value: str, expected: bool) -> None:
    assert matches(m("ref", pattern, "glob"), value) is expected


def test_a_double_star_glob_is_refused() -> None:
    with pytest.raises(ServiceConfigError) as caught:
        check_matcher(m("ref", "refs/heads/**", "glob"), where="s.yml line 3")
    assert caught.value.code == "bad-matcher" and "s.yml line 3" in caught.value.message
    assert not matches(m("ref", "refs/heads/**", "glob"), "refs/heads/a/b")


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("^refs/heads/main$", "refs/heads/main", True),
        ("^refs/heads/main$", "refs/heads/main\n", False),  # re.match with $ would take it
        ("^main|dev$", "main-evil", False),  # the alternation does not escape the anchors
        ("^main|dev$", "evil-dev", False),
        ("^main|dev$", "dev", True),
        ("^refs/tags/v[0-9]+(\\.[0-9]+)*$", "refs/tags/v1.2.3", True),
        ("^refs/tags/v[0-9]+(\\.[0-9]+)*$", "refs/tags/v1.2.3-evil", False),
    ],
)
def test_regexes_match_the_whole_value(pattern: str, value: str, expected: bool) -> None:
    assert matches(m("ref", pattern, "regex"), value) is expected


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("refs/heads/main", "must be anchored"),
        ("^refs/heads/main", "must be anchored"),
        ("refs/heads/main$", "must be anchored"),
        ("^refs/heads/main\\$", "must be anchored"),
        ("(?m)^main$", "must be anchored"),
        ("^(?m)main$", "inline flags"),
        ("^(?i:MAIN)$", "inline flags"),
        ("^(a+)+$", "exponential"),
        ("^(\\w*)*$", "exponential"),
        ("^([a-z]+){2,}$", "exponential"),
        ("^[unclosed$", "does not compile"),
    ],
)
def test_bad_regexes_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        check_matcher(m("ref", pattern, "regex"), where="s.yml line 3")
    assert why in caught.value.message and caught.value.field == "ref"
    assert not matches(m("ref", pattern, "regex"), "main")


def test_one_of_matches_any_listed_value_exactly() -> None:
    matcher = m("environment", ["release", "staging"])
    assert matches(matcher, "staging") and not matches(matcher, "releases")
    assert not matches(matcher, "Release")


def test_an_empty_one_of_matches_nothing() -> None:
    assert not matches(ClaimMatcher("ref", "one_of", ()), "")


# --- serve --check ------------------------------------------------------------------------------
def service(oidc: OidcIssuer, *keys: KeyConfig, audit_key: str | None = None) -> ServiceConfig:
    return ServiceConfig(
        source="s.yml",
        issuers=(oidc.config("gh", "github"), oidc_gitlab_config(oidc)),
        keys={k.name: k for k in keys},
        audit=AuditConfig(key_uri=audit_key),
    )


def one_key(grant: GrantConfig, *, release: bool = True, name: str = "k") -> KeyConfig:
    return replace(key(grant, release=release), name=name, source="s.yml line 5")


def test_well_pinned_grants_pass_check(oidc: OidcIssuer) -> None:
    config = service(oidc, one_key(github_grant()), one_key(gitlab_grant(), name="gl"))
    assert check_config(config) == []


@pytest.mark.parametrize(
    ("claims", "finding"),
    [
        ((m("job_workflow_ref", GH_WORKFLOW),), "no immutable id pinned exactly"),
        ((m("repository", "octo-org/octo-repo"), m("job_workflow_ref", GH_WORKFLOW)),
         "no immutable id"),
        ((m("repository_id", "12*", "glob"), m("job_workflow_ref", GH_WORKFLOW)),
         "no immutable id"),
        ((m("repository_id", "123456789"), m("ref", "refs/heads/main")),
         "no pinned workflow definition"),
        ((m("repository_id", "123456789"), m("workflow_ref", GH_WORKFLOW)),
         "no pinned workflow definition"),
        ((m("repository_id", "123456789"), m("job_workflow_ref", GH_WORKFLOW),
          m("sub", "repo:octo-org/octo-repo:ref:refs/heads/main")), "matches sub"),
        ((m("repository_id", "123456789"), m("job_workflow_ref", GH_WORKFLOW),
          m("repositry_id", "1")), "'repositry_id' is not a github claim"),
        ((m("repository_id", "123456789"), m("job_workflow_ref", GH_WORKFLOW),
          m("event_name", ["push", "pull_request_target"])),
         "matches event_name 'pull_request_target', which a release key refuses"),
        ((m("repository_id", "123456789"), m("job_workflow_ref", GH_WORKFLOW),
          m("runner_environment", "*", "glob")),
         "matches runner_environment 'self-hosted'"),
    ],
)  # fmt: skip
def test_check_refuses_grants_that_do_not_pin_enough(
    oidc: OidcIssuer, claims: tuple[ClaimMatcher, ...], finding: str
) -> None:
    findings = check_config(service(oidc, one_key(github_grant(claims=claims))))
    assert len(findings) == 1, findings
    assert finding in findings[0]
    assert findings[0].startswith("s.yml line 9: key 'k' grant 'release-main': ")


def test_gitlab_grants_need_a_project_id_and_a_pinned_pipeline(oidc: OidcIssuer) -> None:
    grant = gitlab_grant(claims=(m("project_path", "my-group/my-project"), m("ref", "main")))
    findings = check_config(service(oidc, one_key(grant)))
    assert len(findings) == 2
    assert "project_id or job_project_id" in findings[0]
    assert "ci_config_ref_uri or ci_config_sha" in findings[1]


def test_check_accepts_risky_events_and_runners_allowed_by_name(oidc: OidcIssuer) -> None:
    claims = (
        *github_grant().claims,
        m("event_name", ["push", "workflow_run"]),
        m("runner_environment", "self-hosted"),
    )
    grant = github_grant(claims=claims, allow_events=("workflow_run",), allow_self_hosted=True)
    assert check_config(service(oidc, one_key(grant))) == []


def test_check_names_an_unknown_issuer_and_allow_events_that_mean_nothing(oidc: OidcIssuer) -> None:
    findings = check_config(service(oidc, one_key(github_grant(issuer="github-typo"))))
    assert findings == [
        "s.yml line 9: key 'k' grant 'release-main': issuer 'github-typo' is not configured "
        "(issuers: 'gh', 'gl')"
    ]
    findings = check_config(service(oidc, one_key(github_grant(allow_events=("push",)))))
    assert "allow_events push: not events a release key refuses" in findings[0]


def test_check_refuses_the_audit_log_signing_with_a_release_key(oidc: OidcIssuer) -> None:
    config = service(oidc, one_key(github_grant()), audit_key="pkcs11:token=T;object=K")
    assert check_config(config) == [
        "s.yml: audit: key is a release key's URI; the audit log needs a key of its own"
    ]


def test_check_refuses_a_key_without_grants(oidc: OidcIssuer, tmp_path: Path) -> None:
    empty = replace(key(), source="s.yml line 5")
    assert check_config(service(oidc, empty)) == ["s.yml line 5: key 'k' has no grants"]


def test_a_case_variant_of_a_risky_event_is_still_refused(
    oidc: OidcIssuer, verifier: TokenVerifier
) -> None:
    job = github_job(oidc, verifier, event_name="Pull_Request_Target")
    assert denied(key(github_grant(), release=True), job).field == "event_name"


def test_an_unprotected_github_ref_is_denied(oidc: OidcIssuer, verifier: TokenVerifier) -> None:
    grant = github_grant(claims=(*github_grant().claims, m("ref_protected", "true")))
    assert match_grant(key(grant), github_job(oidc, verifier)) is grant
    error = denied(key(grant), github_job(oidc, verifier, ref_protected="false"))
    assert "claim ref_protected is 'false', the grant wants 'true'" in error.message
    assert (
        "claim ref_protected is missing"
        in denied(key(grant), github_job(oidc, verifier, ref_protected=None)).message
    )
