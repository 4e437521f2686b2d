"""Rebuild the signed commit on a clean checkout and compare it with the workspace's artifacts.

This is the backstop against a build server that was tampered with while it built (a file
swapped and restored, SUNSPOT-style): the signed commit is fetched into a fresh directory (a
clone through git's transport, never a copy of the workspace), built again with a normalised
environment, and every artifact must come out bit for bit the same. Mismatches are explained
member by member (`integrity.archive_diff`) so a non-reproducible build can be fixed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from integrity.archive_diff import UNSAFE_PREFIX, explain, run_diffoscope
from integrity.artifacts import match_artifacts, select_artifacts
from integrity.errors import InputError, IntegrityError
from integrity.files import sha256_file
from integrity.gitobjects import GitUnavailableError, run_git
from integrity.repository import open_repository, resolve_commit

#: Set by the rebuild itself; `pass_env` cannot override them.
NORMALISED = ("SOURCE_DATE_EPOCH", "TZ", "LC_ALL", "LANG", "PYTHONHASHSEED", "HOME", "PATH")
#: Lines of the build log shown when the rebuild fails.
LOG_TAIL_LINES = 30


class RebuildError(IntegrityError):
    """The rebuild could not be attempted for reasons outside the input (git failed): exit 3."""

    exit_code = 3
    code = "rebuild-unavailable"


@dataclass
class ArtifactResult:
    """One workspace artifact against the same path in the rebuild."""

    path: str
    expected_sha256: str
    rebuilt_sha256: str | None
    reproduced: bool
    differences: list[str] = field(default_factory=list)
    #: diffoscope's text report when diffoscope ran (None: not installed, not needed or disabled).
    diffoscope: str | None = None

    @property
    def status(self) -> str:
        if self.reproduced:
            return "reproduced"
        return "missing" if self.rebuilt_sha256 is None else "differs"

    @property
    def code(self) -> str | None:
        """`rebuild-missing`, `rebuild-mismatch` (`unsafe-member` when the rebuilt archive holds
        a member that escapes it or is a device), or None when reproduced."""
        code = None
        if self.rebuilt_sha256 is None:
            code = "rebuild-missing"
        elif not self.reproduced:
            code = "rebuild-mismatch"
            if any(line.startswith(UNSAFE_PREFIX) for line in self.differences):
                code = "unsafe-member"
        return code


@dataclass
class RebuildReport:
    """What was rebuilt, how, and whether every artifact came out the same."""

    commit: str
    command: str
    #: The environment of the build: normalised values, and only the *names* passed through.
    environment: dict[str, str]
    passed_env: list[str]
    artifacts: list[ArtifactResult]
    build_exit_code: int
    #: Set when the build failed (non-zero exit or timeout); then nothing is reproduced.
    failure: str | None = None
    #: The reason code of `failure` (`rebuild-failed`, `rebuild-timeout`).
    failure_code: str | None = None
    log_tail: str = ""
    #: The temporary clone and build log, only when kept (`keep=True`); else deleted.
    clone_dir: Path | None = None
    log_file: Path | None = None

    @property
    def reproduced(self) -> bool:
        return self.failure is None and all(a.reproduced for a in self.artifacts)

    @property
    def code(self) -> str | None:
        """Why it was not reproduced: the build's failure, else the first artifact's reason."""
        if self.failure is not None:
            return self.failure_code
        return next((a.code for a in self.artifacts if a.code), None)

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.commit,
            "command": self.command,
            "reproduced": self.reproduced,
            "code": self.code,
            "environment": self.environment,
            "passed_env": self.passed_env,
            "build_exit_code": self.build_exit_code,
            "failure": self.failure,
            "log_tail": self.log_tail if self.failure else None,
            "clone_dir": str(self.clone_dir) if self.clone_dir else None,
            "log_file": str(self.log_file) if self.log_file else None,
            "artifacts": [
                {
                    "path": a.path,
                    "status": a.status,
                    "code": a.code,
                    "reproduced": a.reproduced,
                    "expected_sha256": a.expected_sha256,
                    "rebuilt_sha256": a.rebuilt_sha256,
                    "differences": a.differences,
                    "diffoscope": a.diffoscope,
                }
                for a in self.artifacts
            ],
        }


def rebuild(
    repo: Path,
    commit: str,
    command: str,
    artifact_globs: Sequence[str],
    pass_env: Sequence[str] = (),
    *,
    keep: bool = False,
    timeout: float | None = None,
    diffoscope: bool = True,
    environ: Mapping[str, str] | None = None,
) -> RebuildReport:
    """Rebuild `commit` of `repo` with `command` and compare the artifacts matched by the globs.

    Raises InputError (exit 2) for a path that is not a repository, a commit that does not
    resolve, a glob matching nothing in the workspace or a build command that does not exist;
    RebuildError (exit 3) when git cannot clone. A build that fails is a report, not an error:
    it could not reproduce the artifacts.
    """
    caller_env = dict(os.environ if environ is None else environ)
    root = open_repository(repo)
    oid = resolve_commit(root, commit)
    expected = _expected(root, artifact_globs)
    extra = _passed_env(pass_env, caller_env)
    epoch = _git(root, "show", "-s", "--format=%ct", oid).strip()

    work = Path(tempfile.mkdtemp(prefix="sealgate-rebuild-"))
    try:
        clone = work / "src"
        home = work / "home"
        home.mkdir()
        log = work / "build.log"
        _clone(root, oid, clone)
        env = {
            "SOURCE_DATE_EPOCH": epoch,
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "HOME": str(home),
            "PATH": caller_env.get("PATH", os.defpath),
            **extra,
        }
        code, failure, failure_code = _build(command, clone, env, log, timeout)
        tail = _tail(log, LOG_TAIL_LINES)
        if code == 127:
            raise InputError(
                f"build command {command!r} not found (bash exit 127)",
                hint=f"build log tail: {tail.strip()[-500:]}" if tail.strip() else None,
                code="build-command-not-found",
                field="build_command",
            )
        produced = {
            p.relative_to(clone).as_posix(): p
            for hits in select_artifacts(clone, artifact_globs)
            for p in hits
        }
        results = [
            _compare(root, rel, digest, produced, diffoscope) for rel, digest in expected.items()
        ]
        return RebuildReport(
            commit=oid,
            command=command,
            environment={
                "SOURCE_DATE_EPOCH": epoch,
                "TZ": "UTC",
                "LC_ALL": "C.UTF-8",
                "LANG": "C.UTF-8",
                "PYTHONHASHSEED": "0",
                "HOME": "(a fresh temporary directory)",
                "PATH": "(inherited)",
            },
            passed_env=sorted(extra),
            artifacts=results,
            build_exit_code=code,
            failure=failure,
            failure_code=failure_code,
            log_tail=tail,
            clone_dir=clone if keep else None,
            log_file=log if keep else None,
        )
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _expected(root: Path, globs: Sequence[str]) -> dict[str, str]:
    """Relative path -> sha256 of each workspace file the globs select (the one matcher)."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in match_artifacts(root, globs)}


def _passed_env(names: Sequence[str], caller_env: Mapping[str, str]) -> dict[str, str]:
    passed: dict[str, str] = {}
    for name in names:
        if not name or "=" in name:
            raise InputError(
                f"variable {name!r} to pass: give a variable name, not a value",
                code="bad-pass-env",
                field="pass_env",
            )
        if name in NORMALISED:
            raise InputError(
                f"variable {name} to pass: set by the rebuild itself",
                code="bad-pass-env",
                field="pass_env",
            )
        if name not in caller_env:
            raise InputError(
                f"variable {name} to pass: not set in the environment",
                code="pass-env-unset",
                field="pass_env",
            )
        passed[name] = caller_env[name]
    return passed


def _clone(source: Path, oid: str, clone: Path) -> None:
    """Fetch exactly the signed commit through git's transport into an empty repository.

    `git fetch` of the id (not `cp -r`) means the objects are re-hashed on the way in, and
    nothing of the workspace (untracked files, build outputs, a modified index) can leak in.
    """
    steps: list[tuple[str, list[str]]] = [
        ("init", ["init", "-q", "--template=", str(clone)]),
        ("config", ["-C", str(clone), "config", "core.autocrlf", "false"]),
        ("fetch", ["-C", str(clone), "fetch", "-q", "--no-tags", "--", str(source), oid]),
        ("checkout", ["-C", str(clone), "-c", "advice.detachedHead=false",
                      "checkout", "-q", "--detach", oid]),
    ]  # fmt: skip
    for name, step in steps:
        result = _run_git(None, *step)
        if result.returncode != 0:
            raise RebuildError(
                f"commit {oid}: cannot clone into a fresh directory: git {name} failed: "
                f"{result.stderr.strip()[-500:]}",
                code="clone-failed",
            )
    head = _run_git(clone, "rev-parse", "HEAD").stdout.strip()
    if head != oid:
        raise RebuildError(
            f"commit {oid}: the fresh checkout is at {head or 'nothing'}", code="clone-failed"
        )


def _build(
    command: str, cwd: Path, env: dict[str, str], log: Path, timeout: float | None
) -> tuple[int, str | None, str | None]:
    """Run `bash -c command`; (exit code, failure text, its code). Output goes to `log`."""
    bash = shutil.which("bash", path=env["PATH"]) or "/bin/bash"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the build command is what the user asked to run
            [bash, "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            return -1, f"the rebuild timed out after {timeout:g} s", _code(code="rebuild-timeout")
    if code == 0 or code == 127:
        return code, None, None
    return code, f"the rebuild failed with exit {code}", _code(code="rebuild-failed")


def _code(*, code: str) -> str:
    """A reason code, named as a keyword where it is chosen (the reason-code table's scan)."""
    return code


def _compare(
    root: Path,
    rel: str,
    expected: str,
    produced: Mapping[str, Path],
    use_diffoscope: bool,
) -> ArtifactResult:
    """`produced` is what the same globs select in the clone, through the same matcher."""
    rebuilt = produced.get(rel)
    if rebuilt is None:
        notes = ["missing in the rebuild"]
        if produced:
            names = sorted(produced)
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            notes.append(f"the rebuild produced instead: {shown}")
        return ArtifactResult(rel, expected, None, False, notes)
    digest = sha256_file(rebuilt)
    if digest == expected:
        return ArtifactResult(rel, expected, digest, True)
    workspace = root / rel
    differences = explain(workspace, rebuilt)
    report = run_diffoscope(workspace, rebuilt) if use_diffoscope else None
    return ArtifactResult(rel, expected, digest, False, differences, report)


def _tail(log: Path, lines: int) -> str:
    try:
        with log.open("rb") as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(max(0, size - 16384))
            data = stream.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _git(cwd: Path, *args: str) -> str:
    result = _run_git(cwd, *args)
    if result.returncode != 0:
        raise RebuildError(f"git {' '.join(args)} in {cwd}: {result.stderr.strip()}")
    return result.stdout


def _run_git(cwd: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    """The one git runner, its output as text (rebuild reads short lines only)."""
    try:
        result = run_git(cwd, *args)
    except GitUnavailableError as exc:
        raise RebuildError(exc.message, code=exc.code) from None
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )
