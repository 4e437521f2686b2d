"""The source stages: commits (signed as the policy allows), tree (the workspace is the signed
commit) and watch (the build touches no source)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from integrity.commits import CommitChecker, Repository, load_cache, save_cache
from integrity.policy import Policy
from integrity.repository import parse_range
from integrity.tree import display_path, prove_tree
from integrity.watch import watch_build
from sealgate.options import policy_file
from sealgate.pipeline.base import default_range
from sealgate.pipeline.config import RunConfig
from sealgate.pipeline.report import (
    RunResult,
    Stage,
)
from signer.sign import SIGNATURE_SUFFIX


class StageContext:
    """What every stage reads and writes: the settings, the repository, the result so far."""

    config: RunConfig
    root: Path
    result: RunResult
    build_output: int | None
    policy: Policy | None


def _relative_inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def allowed_untracked(config: RunConfig) -> list[str]:
    """What may exist untracked (ignored or not): artifacts, their signatures, the declared
    outputs and caches, our own files. Anything else present before the build is reported."""
    allowed = list(config["artifacts"]) + list(config["outputs"]) + list(config["caches"])
    allowed += [g + SIGNATURE_SUFFIX for g in config["artifacts"] if not g.endswith("/")]
    for own in (config["report"], config["attestation"]):
        relative = _relative_inside(own, config.repo)
        if relative:
            allowed.append("/" + relative)
    return allowed


def output_directories(globs: Sequence[str]) -> list[str]:
    """Patterns that let the build create the literal parent directories of the globs (`dist/`
    for `dist/*`), and only the directories themselves: what is in them is for the globs."""
    directories: dict[str, None] = {}
    for glob in globs:
        parts = glob.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            if any(c in parts[depth - 1] for c in "*?[]!\\"):
                break
            directories["/".join(parts[:depth])] = None
    patterns: list[str] = []
    for directory in sorted(directories, key=lambda d: d.count("/")):
        patterns += [f"/{directory}/", f"!/{directory}/?*"]
    return patterns


class SourceStages(StageContext):
    """The proofs about the source, made before anything is signed."""

    def _commits(self, stage: Stage) -> bool:
        fixed: Policy | None = None
        if self.config["policy"] is not None:
            fixed = policy_file(self.config["policy"])
        if self.config["range"]:
            self.result.range, why = self.config["range"], "given with --range"
        else:
            self.result.range, why = default_range(
                self.root, policy=fixed, base_branch=self.config["base_branch"]
            )
        base, head = parse_range(self.result.range)
        repo = Repository(self.root)
        try:
            policy = fixed if fixed is not None else repo.policy_at(repo.resolve(base))
            self.policy = policy
            checker = CommitChecker(repo, policy, fixed_policy=self.config["policy"] is not None)
            cache = load_cache(repo)
            verdicts = checker.check_range(base, head, cache=cache)
            save_cache(repo, cache)
        finally:
            repo.reader.close()
        failed = [v for v in verdicts if not v.verified]
        stage.code = next((v.code for v in failed if v.code), None)
        stage.reasons = [v.line() for v in failed]
        stage.annotations = [
            (None, f"commit {v.oid[:12]} {v.subject!r}: {v.reason}") for v in failed
        ]
        stage.details = {
            "range": self.result.range,
            "base": why,
            "policy": policy.source,
            "checked": len(verdicts),
            "failed": len(failed),
            "commits": [
                {"id": v.oid, "subject": v.subject, "verified": v.verified, "signer": v.signer,
                 "reason": v.reason, "code": v.code}
                for v in verdicts
            ],
        }  # fmt: skip
        stage.summary = (
            f"{len(verdicts) - len(failed)} of {len(verdicts)} commits in "
            f"{self.result.range} verified ({policy.source}; base: {why})"
        )
        return not failed

    def _tree(self, stage: Stage) -> bool:
        report = prove_tree(
            self.root,
            "HEAD",
            allow_untracked=allowed_untracked(self.config),
            submodules=self.config["submodules"],
        )
        stage.reasons = [d.line() for d in report.differences]
        # quoted: a file name with a newline must not become a second workflow command line
        stage.annotations = [
            (display_path(d.path), f"{d.kind}: {d.detail}") for d in report.differences
        ]
        stage.details = {
            "commit": report.commit,
            "expected_tree": report.expected_tree,
            "actual_tree": report.actual_tree,
            "files": report.files,
            "differences": [d.as_json() for d in report.differences],
        }
        stage.code = report.code
        verdict = "matches" if report.ok else "DIFFERS from"
        stage.summary = (
            f"work tree {verdict} commit {report.commit[:12]} "
            f"({report.files} files, {len(report.differences)} difference(s))"
        )
        return report.ok

    def _watch(self, stage: Stage) -> bool:
        command = ["/bin/sh", "-c", self.config["build_command"]]
        sys.stdout.flush()
        report = watch_build(
            self.root,
            command,
            outputs=output_directories(
                self.config["artifacts"] + self.config["outputs"] + self.config["caches"]
            )
            + allowed_untracked(self.config),
            commit=self.result.commit or "HEAD",
            stdout=self.build_output,
            submodules=self.config["submodules"],
        )
        stage.reasons = [v.line() for v in report.violations]
        stage.reasons += [d.line() for d in report.tree.differences]
        stage.annotations = [
            (display_path(v.path), f"changed during the build: {v.kind} at {v.time}")
            for v in report.violations
        ]
        stage.annotations += [
            (display_path(d.path), f"{d.kind}: {d.detail}") for d in report.tree.differences
        ]
        if report.build_exit != 0:
            stage.reasons.insert(0, f"the build exited with status {report.build_exit}")
        stage.details = {
            "build": self.config["build_command"],
            "build_exit": report.build_exit,
            "violations": len(report.violations),
            "tree_ok": report.tree.ok,
            "findings": [v.as_json() for v in report.violations],
            "differences": [d.as_json() for d in report.tree.differences],
        }
        stage.code = report.code
        if stage.code is None and report.build_exit != 0:
            stage.code = "build-failed"
        build = "build succeeded" if report.build_exit == 0 else "build FAILED"
        stage.summary = (
            f"{build} ({shlex.quote(self.config['build_command'])}); "
            f"{len(report.violations)} violation(s); tree "
            f"{'matches' if report.tree.ok else 'differs'}"
        )
        return report.ok
