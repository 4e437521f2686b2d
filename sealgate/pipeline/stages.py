"""The stages of `sealgate run`, in order; the first failure stops the pipeline."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from integrity.artifacts import match_artifacts
from integrity.attestation import CHECK_LEVEL, vsa_statement
from integrity.commits import CommitChecker, Repository, load_cache, save_cache
from integrity.errors import IntegrityError
from integrity.gitobjects import git
from integrity.policy import Policy
from integrity.tree import display_path, prove_tree
from integrity.watch import watch_build
from sealgate.attest import write_attestation
from sealgate.errors import SealgateError
from sealgate.options import policy_file
from sealgate.output import os_error_line
from sealgate.pipeline.base import _split_range, default_range
from sealgate.pipeline.config import RunConfig
from sealgate.pipeline.prepare import Prepared, prepare
from sealgate.pipeline.report import (
    FAILED,
    PASSED,
    SKIPPED,
    STAGES,
    RunResult,
    Stage,
    config_secrets,
)
from signer.digest import digest_file
from signer.errors import SignerError
from signer.keys import open_key
from signer.sign import SIGNATURE_SUFFIX, sign_artifacts
from signer.verify import verify_artifact


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


class Pipeline:
    """Runs the stages in order; the first failure stops it."""

    def __init__(self, config: RunConfig, *, build_output: int | None = None) -> None:
        self.config = config
        self.root = config.repo
        self.result = RunResult({name: Stage(name) for name in STAGES})
        self.result.secrets = config_secrets(config, os.environ)
        self.build_output = build_output
        self.policy: Policy | None = None

    def run(self) -> RunResult:
        """Run every enabled stage; errors inside a stage fail it with their exit code."""
        prepared = prepare(self.config)
        self.result.commit = git(self.root, "rev-parse", "HEAD^{commit}").decode().strip()
        steps: list[tuple[str, bool, Callable[[Stage], bool | None]]] = [
            ("commits", self.config["verify_commits"], self._commits),
            ("tree", self.config["check_tree"], self._tree),
            ("watch", bool(self.config["build_command"]), self._watch),
            ("sign", True, lambda stage: self._sign(stage, prepared)),
            ("verify", self.config["verify"], lambda stage: self._verify(stage, prepared)),
            ("attest", self.config["attest"], self._attest),
        ]
        disabled = {
            "commits": "switched off",
            "tree": "switched off",
            "watch": "no build command",
            "verify": "switched off",
            "attest": "switched off",
        }
        for name, enabled, step in steps:
            stage = self.result.stages[name]
            if not enabled:
                stage.summary = disabled[name]
                continue
            try:
                ok = step(stage)
            except (SignerError, IntegrityError, SealgateError) as exc:
                stage.status = FAILED
                stage.code = exc.code
                stage.reasons.append(exc.diagnostics())
                stage.summary = exc.diagnostics()
                self.result.exit_code = exc.exit_code
                break
            except OSError as exc:  # a path the OS refuses: a usage error, never a verdict
                stage.status, stage.code = FAILED, "path-error"
                stage.summary = os_error_line(exc)
                stage.reasons.append(stage.summary)
                self.result.exit_code = 2
                break
            if ok is None:  # the stage found nothing to do
                continue
            stage.status = PASSED if ok else FAILED
            if not ok:
                if not stage.code:  # each step sets its own first; this should not be seen
                    stage.code = "verification-failed"
                self.result.exit_code = 1
                break
        if self.result.exit_code:
            for stage in self.result.stages.values():
                if stage.status == SKIPPED and stage.summary == "not run":
                    stage.summary = "not run: an earlier stage failed"
        return self.result

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
        base, head = _split_range(self.result.range)
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

    def _sign(self, stage: Stage, prepared: Prepared) -> bool:
        artifacts = match_artifacts(
            self.root, self.config["artifacts"], exclude_suffixes=(SIGNATURE_SUFFIX,)
        )
        with open_key(self.config["key"]) as key:
            self.result.key = key.display_uri
            self.result.signed = sign_artifacts(key, artifacts, prepared.sign_options)
        stamped = " and timestamped" if prepared.tsa else ""
        stage.summary = (
            f"{len(self.result.signed)} artifact(s) signed{stamped} with {self.result.key}"
        )
        stage.details = {"signatures": [str(s.signature) for s in self.result.signed]}
        return True

    def _verify(self, stage: Stage, prepared: Prepared) -> bool:
        assert prepared.verify_policy is not None  # noqa: S101 - prepare() made it
        self.result.verdicts = [
            verify_artifact(s.artifact, prepared.verify_policy) for s in self.result.signed
        ]
        failed = [v for v in self.result.verdicts if not v.verified]
        stage.code = next((v.code for v in failed if v.code), None)
        stage.reasons = [f"{v.artifact}: {v.reason}" for v in failed]
        stage.annotations = [(str(v.artifact), str(v.reason)) for v in failed]
        stage.summary = f"{len(self.result.verdicts) - len(failed)} verified, {len(failed)} failed"
        return not failed

    def _attest(self, stage: Stage) -> bool | None:
        stages = self.result.stages
        check = (
            "watch"
            if stages["watch"].status == PASSED
            else "tree"
            if stages["tree"].status == PASSED
            else "commits"
            if stages["commits"].status == PASSED
            else None
        )
        if check is None:
            stage.summary = "no integrity check ran: nothing to attest"
            return None
        levels = [
            CHECK_LEVEL[n] for n in ("commits", "tree", "watch") if stages[n].status == PASSED
        ]
        commit = self.result.commit or ""
        statement = vsa_statement(
            check=check,
            commit=commit,
            resource_uri=f"git+file://{self.root}@{commit}",
            subjects=[
                (
                    s.artifact.relative_to(self.root).as_posix(),
                    digest_file(s.artifact, "sha256").digest.hex(),
                )
                for s in self.result.signed
            ],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=levels,
        )
        out: Path = self.config["attestation"]
        out.parent.mkdir(exist_ok=True)  # the last level only; prepare() checked the rest
        write_attestation(self.config["attest_key"], statement, out)
        self.result.attestation = out
        stage.summary = f"VSA ({check}: {', '.join(levels)}) written to {out}"
        return True
