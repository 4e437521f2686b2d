"""The stages of `sealgate run`, in order; the first failure stops the pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable

from integrity.errors import IntegrityError
from integrity.policy import Policy
from integrity.repository import resolve_commit
from sealgate.errors import SealgateError
from sealgate.output import os_error_line
from sealgate.pipeline.config import RunConfig
from sealgate.pipeline.prepare import prepare
from sealgate.pipeline.release import ReleaseStages
from sealgate.pipeline.report import (
    FAILED,
    PASSED,
    SKIPPED,
    STAGES,
    RunResult,
    Stage,
    config_secrets,
)
from sealgate.pipeline.source import SourceStages, allowed_untracked, output_directories
from signer.errors import SignerError

__all__ = ["Pipeline", "allowed_untracked", "output_directories"]


class Pipeline(SourceStages, ReleaseStages):
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
        self.result.commit = resolve_commit(self.root, "HEAD", field="repo")
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
