"""`sealgate run`: the whole pipeline, composed from the library APIs (never the CLI itself).

Stages, in order: `commits` (every commit of the release range signed as the policy allows),
`tree` (the workspace is the signed commit), `watch` (the build, when one is given, touches no
source), `sign` (the artifacts, through the HSM/KMS), `verify` (what was just signed, as the
gate will), `attest` (a DSSE-signed SLSA VSA about the signed artifacts). A failed stage stops
the pipeline; a failure before `sign` leaves no signature behind. Parts: `config` (settings),
`prepare` (loaded before any stage), `base` (the default range), `source` and `release` (the
stages), `stages` (the runner), `report` (JSON, human lines, job summary).
"""

from __future__ import annotations

from sealgate.options import Setting
from sealgate.pipeline.base import NO_TRUSTED_BASE, default_range
from sealgate.pipeline.config import (
    SETTINGS,
    RunConfig,
    _read_config_file,
    repo_root,
    resolve_config,
)
from sealgate.pipeline.prepare import Prepared, prepare
from sealgate.pipeline.report import (
    FAILED,
    PASSED,
    SKIPPED,
    STAGES,
    RunResult,
    Stage,
    human_lines,
    markdown_summary,
    write_outputs,
)
from sealgate.pipeline.stages import Pipeline, allowed_untracked, output_directories

__all__ = [
    "FAILED",
    "NO_TRUSTED_BASE",
    "PASSED",
    "SETTINGS",
    "SKIPPED",
    "STAGES",
    "Pipeline",
    "Prepared",
    "RunConfig",
    "RunResult",
    "Setting",
    "Stage",
    "_read_config_file",
    "allowed_untracked",
    "default_range",
    "human_lines",
    "markdown_summary",
    "output_directories",
    "prepare",
    "repo_root",
    "resolve_config",
    "write_outputs",
]
