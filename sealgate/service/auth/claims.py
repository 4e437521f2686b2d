"""The claims a grant may match, per provider, as normalised strings (DESIGN §6), never `sub`.

Only these names reach an Identity: a grant on anything else never matches, and `serve --check`
says so. Values are strings so that `project_id: 20` in service.yml and `"20"` in a token agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from sealgate.service.config import Provider
from sealgate.service.errors import AuthError
from sealgate.service.protocol import is_unicode

#: `ref_protected` is not in DESIGN §6's GitHub list, but GitHub sends it and a grant may want
#: branch protection as well as the ref's name.
GITHUB_CLAIMS = frozenset(
    {"repository", "repository_id", "repository_owner", "repository_owner_id", "ref", "ref_type",
     "ref_protected", "event_name", "environment", "job_workflow_ref", "job_workflow_sha",
     "workflow_ref", "runner_environment", "actor_id"}
)  # fmt: skip
#: `pipeline_source` is not in DESIGN §6's list: a release key needs it to refuse merge-request
#: pipelines (GitLab's equivalent of pull_request_target).
GITLAB_CLAIMS = frozenset(
    {"project_path", "project_id", "job_project_id", "namespace_id", "ref", "ref_type",
     "ref_protected", "environment", "environment_protected", "ci_config_ref_uri",
     "ci_config_sha", "runner_environment", "user_id", "pipeline_source"}
)  # fmt: skip
PROVIDER_CLAIMS: dict[Provider, frozenset[str]] = {"github": GITHUB_CLAIMS, "gitlab": GITLAB_CLAIMS}

#: A claim value longer than this is refused: it lands in the audit log and in messages.
MAX_CLAIM_LENGTH = 1024


def scalar_text(value: object) -> str | None:
    """A JSON/YAML scalar as the string a grant compares: booleans "true"/"false", integers in
    decimal; None for anything else (objects, lists, fractions, null)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def normalise(provider: Provider, payload: Mapping[str, object], *, issuer: str) -> dict[str, str]:
    """The provider's grant claims of a verified token as strings; a claim of another type is
    refused rather than guessed at (a list `ref` must not match by its first element)."""
    claims: dict[str, str] = {}
    for name in sorted(PROVIDER_CLAIMS[provider]):
        if name not in payload or payload[name] is None:
            continue
        value = payload[name]
        text = scalar_text(value)
        if text is None:
            raise AuthError(
                f"token from {issuer}: claim {name} is a {type(value).__name__}, "
                "not a string, number or boolean",
                code="token-claim-invalid",
                field=name,
            )
        if not is_unicode(text):
            raise AuthError(
                f"token from {issuer}: claim {name} holds a lone surrogate",
                code="token-claim-invalid",
                field=name,
            )
        if len(text) > MAX_CLAIM_LENGTH:
            raise AuthError(
                f"token from {issuer}: claim {name} is {len(text)} characters long, "
                f"more than the {MAX_CLAIM_LENGTH} allowed",
                code="token-claim-invalid",
                field=name,
            )
        claims[name] = text
    return claims
