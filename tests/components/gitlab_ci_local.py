"""GitLab CI run locally by gitlab-ci-local (npm, 4.70.0: later releases need Node 22).

`scripts/dev.sh` installs it into $SEALGATE_NODE_TOOLS (default ~/.cache/sealgate-node). Jobs run
in the shell executor (`--force-shell-executor`: no Docker engine here), so the component's
`image:` is ignored and the jobs use the `sealgate` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.components import require, run_in_group

VERSION = "4.70.0"


def node_tools() -> Path:
    return Path(os.environ.get("SEALGATE_NODE_TOOLS") or Path.home() / ".cache" / "sealgate-node")


def gitlab_ci_local() -> str:
    installed = node_tools() / "node_modules" / ".bin" / "gitlab-ci-local"
    path = str(installed) if installed.is_file() else shutil.which("gitlab-ci-local")
    require(
        path is not None and shutil.which("rsync") is not None,
        f"gitlab-ci-local {VERSION} (npm) and rsync (apt)",
    )
    assert path is not None
    return path


def run_pipeline(
    repo: Path, *, variables: Mapping[str, str], home: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run every job of `repo`'s .gitlab-ci.yml in the shell executor, each in its own copy."""
    command = [
        gitlab_ci_local(),
        "--force-shell-executor",
        "--shell-isolation",
        "--no-color",
        "--home",
        str(home),
    ]
    for name, value in variables.items():
        command += ["--variable", f"{name}={value}"]
    return run_in_group(command, cwd=repo, timeout=timeout)
