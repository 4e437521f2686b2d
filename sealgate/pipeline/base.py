"""The default commit range: from a base a pusher without a policy key cannot move."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from integrity.commits import CommitChecker, Repository
from integrity.errors import IntegrityError
from integrity.gitobjects import git, refuse_grafts
from integrity.policy import Policy
from integrity.repository import resolve_commit
from sealgate.errors import SealgateError
from signer.errors import ConfigError
from signer.files import read_capped

NO_TRUSTED_BASE = (
    "no trusted base for the commit range: give --range BASE..HEAD "
    "(or --base-branch, or a fixed --policy with signed release tags)"
)


def default_range(
    root: Path,
    *,
    policy: Policy | None = None,
    base_branch: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """(BASE..HEAD, why this base): a base a pusher without a policy key cannot move.

    With a fixed policy: the newest signed tag reachable from HEAD^ that verifies under it.
    Else the merge base with the protected branch. Never a tag verified under the in-repo
    policy: a pusher can add their own key to it in an unsigned commit and sign a tag there.
    """
    env = os.environ if env is None else env
    refuse_grafts(root)  # merge-base and the tag walk follow parents: no rewritten ones
    head = resolve_commit(root, "HEAD", field="repo")
    try:
        parent = git(root, "rev-parse", "--verify", "--quiet", "HEAD^").decode().strip()
    except IntegrityError:
        raise SealgateError(
            "HEAD is the root commit: no trusted base to verify it against",
            hint="give --range BASE..HEAD, or --no-commits",
            code="no-trusted-base",
        ) from None
    if policy is not None:
        repo = Repository(root)
        try:
            found = CommitChecker(repo, policy, fixed_policy=True).trusted_tag(parent)
        finally:
            repo.reader.close()
        if found is not None:
            name, commit = found
            return f"{commit}..HEAD", f"signed tag {name}, verified under {policy.source}"
    for refs, why in _protected_branches(base_branch, env):
        tip = next((t for t in (_commit_of(root, ref) for ref in refs) if t), None)
        if tip is None:
            raise SealgateError(
                f"base branch {refs[0]} ({why}) is not in {root}",
                hint="fetch it (actions/checkout: fetch-depth: 0), or give --range BASE..HEAD",
                code="base-branch-missing",
                field="base_branch",
            )
        try:
            merge_base = git(root, "merge-base", head, tip).decode().strip()
        except IntegrityError:
            raise SealgateError(
                f"HEAD has no common history with {refs[0]} ({why})", code="no-common-history"
            ) from None
        if merge_base != head:
            return f"{merge_base}..HEAD", f"merge base with {refs[0]} ({why})"
    raise SealgateError(NO_TRUSTED_BASE, code="no-trusted-base")


def _commit_of(root: Path, ref: str) -> str | None:
    try:
        return (
            git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
            .decode()
            .strip()
        )
    except IntegrityError:
        return None


def _protected_branches(
    base_branch: str | None, env: Mapping[str, str]
) -> list[tuple[list[str], str]]:
    """Full ref names of the protected branch to try (never a bare name, which a pushed tag
    could shadow) and where the name came from; the first source that names one wins."""
    if base_branch:
        if base_branch.startswith("refs/"):
            return [([base_branch], "--base-branch")]
        return [([f"refs/remotes/{base_branch}", f"refs/heads/{base_branch}"], "--base-branch")]
    for variable in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"):
        name = env.get(variable, "").strip()
        if name:
            return [([f"refs/remotes/origin/{name}"], f"${variable}")]
    default, where = env.get("CI_DEFAULT_BRANCH", "").strip(), "$CI_DEFAULT_BRANCH"
    if not default and env.get("GITHUB_EVENT_PATH"):
        default = _github_default_branch(Path(env["GITHUB_EVENT_PATH"]))
        where = "the repository's default branch"
    return [([f"refs/remotes/origin/{default}"], where)] if default else []


def _github_default_branch(event: Path) -> str:
    """`repository.default_branch` of the GitHub event payload ('' when it has none)."""
    try:
        document = json.loads(read_capped(event, what="$GITHUB_EVENT_PATH", limit=64 << 20))
    except (ConfigError, ValueError, RecursionError):
        return ""
    repository = document.get("repository") if isinstance(document, dict) else None
    branch = repository.get("default_branch") if isinstance(repository, dict) else None
    return branch if isinstance(branch, str) else ""
