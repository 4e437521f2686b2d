"""`sealgate run`: the whole pipeline, composed from the library APIs (never the CLI itself).

Stages, in order: `commits` (every commit of the release range signed as the policy allows),
`tree` (the workspace is the signed commit), `watch` (the build, when one is given, touches no
source), `sign` (the artifacts, through the HSM/KMS), `verify` (what was just signed, as the
gate will), `attest` (a DSSE-signed SLSA VSA about the signed artifacts). A failed stage stops
the pipeline; a failure before `sign` leaves no signature behind.

Configuration comes from flags, then `SEALGATE_*` variables, then `sealgate.yml` in the
repository root (keys are the settings' snake_case names): the first that sets a value wins.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from integrity.attestation import CHECK_LEVEL, vsa_statement
from integrity.commits import CommitChecker, Repository, load_cache, save_cache
from integrity.errors import InputError, IntegrityError
from integrity.gitobjects import git, refuse_grafts, work_tree
from integrity.policy import LinedDict, Policy, load_yaml
from integrity.tree import display_path, prove_tree
from integrity.watch import watch_build
from sealgate.attest import write_attestation
from sealgate.errors import SealgateError
from sealgate.options import policy_file, tsa_certs, tsa_settings
from signer.certificates import load_certificate, load_certificates
from signer.chain import load_trust_roots
from signer.errors import ConfigError, SignerError
from signer.files import read_capped
from signer.keys import open_key
from signer.redact import (
    MIN_SECRET,
    environment_secrets,
    pin_values,
    redact_text,
    redact_url,
    url_secrets,
)
from signer.sign import SIGNATURE_SUFFIX, SignedArtifact, SignOptions, sign_artifacts
from signer.timestamp import TsaSettings
from signer.verify import Verdict, VerifyPolicy, parse_identities, verify_artifact

STAGES = ("commits", "tree", "watch", "sign", "verify", "attest")
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
CONFIG_FILE = "sealgate.yml"
DEFAULT_REPORT = "sealgate-report.json"
DEFAULT_ATTESTATION = "sealgate-vsa.intoto.json"
CONFIG_LIMIT = 1 << 20  # sealgate.yml: settings, never data

#: What decides which commits are proven and against what: never read from the work tree's
#: sealgate.yml, which the commits under test can change.
_NOT_FROM_THE_REPOSITORY = frozenset({"range", "policy", "base_branch"})
#: The source proofs this file may switch on but never off.
_PROOFS = {"verify_commits": "commits", "check_tree": "tree"}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    """One configuration value: its environment variable and how text becomes the value."""

    env: str
    kind: str  # str | path | list (comma or newline) | lines (newline only) | bool | int | float
    default: Any = None


#: name (the flag's dest, the sealgate.yml key) -> setting.
SETTINGS: dict[str, Setting] = {
    "range": Setting("SEALGATE_RANGE", "str"),
    "policy": Setting("SEALGATE_POLICY", "path"),
    "base_branch": Setting("SEALGATE_BASE_BRANCH", "str"),
    "build_command": Setting("SEALGATE_BUILD_COMMAND", "str"),
    "artifacts": Setting("SEALGATE_ARTIFACTS", "list", []),
    "outputs": Setting("SEALGATE_OUTPUTS", "list", []),
    "caches": Setting("SEALGATE_CACHES", "list", []),
    "submodules": Setting("SEALGATE_SUBMODULES", "str", "prove"),
    "key": Setting("SEALGATE_KEY", "str"),
    "certificate": Setting("SEALGATE_CERTIFICATE", "path"),
    "chain": Setting("SEALGATE_CHAIN", "list", []),
    "tsa_urls": Setting("SEALGATE_TSA_URLS", "list", []),
    "tsa_roots": Setting("SEALGATE_TSA_ROOTS", "path"),
    "tsa_certs": Setting("SEALGATE_TSA_CERTS", "path"),
    "tsa_timeout": Setting("SEALGATE_TSA_TIMEOUT", "float", 10.0),
    "tsa_retries": Setting("SEALGATE_TSA_RETRIES", "int", 2),
    "tsa_concurrency": Setting("SEALGATE_TSA_CONCURRENCY", "int", 8),
    "trust_roots": Setting("SEALGATE_TRUST_ROOTS", "path"),
    "identity": Setting("SEALGATE_IDENTITY", "lines", []),
    "verify_commits": Setting("SEALGATE_VERIFY_COMMITS", "bool", True),
    "check_tree": Setting("SEALGATE_CHECK_TREE", "bool", True),
    "verify": Setting("SEALGATE_VERIFY", "bool", True),
    "attest": Setting("SEALGATE_ATTEST", "bool", True),
    "attest_key": Setting("SEALGATE_ATTEST_KEY", "str"),
    "attestation": Setting("SEALGATE_ATTESTATION", "path"),
    "report": Setting("SEALGATE_REPORT", "path"),
}
#: sealgate.yml spellings of the switches that mirror the `--no-*` flags.
_FILE_ALIASES = {
    "no_commits": "verify_commits",
    "no_tree": "check_tree",
    "no_verify": "verify",
    "no_attest": "attest",
    "tsa": "tsa_urls",
}


@dataclass
class RunConfig:
    """The resolved configuration of one run; paths are absolute."""

    repo: Path
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _parse(name: str, kind: str, raw: Any, where: str, base: Path) -> Any:
    """Turn a text (env) or YAML value into the setting's type; bad input names its source."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SealgateError(f"{where}: {raw!r} is not a boolean (use true or false)")
    if kind in ("int", "float"):
        try:
            return int(raw) if kind == "int" else float(raw)
        except (TypeError, ValueError):
            raise SealgateError(f"{where}: {raw!r} is not a number") from None
    if kind in ("list", "lines"):
        if isinstance(raw, list):
            items = [str(item).strip() for item in raw]
        elif isinstance(raw, str):
            separated = raw if kind == "lines" else raw.replace(",", "\n")
            items = [item.strip() for item in separated.splitlines()]
        else:
            raise SealgateError(f"{where}: expected a list or a string, got {raw!r}")
        items = [item for item in items if item]
        if name == "chain":
            return [base / item for item in items]
        return items
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise SealgateError(f"{where}: expected a string, got {raw!r}")
    return base / str(raw) if kind == "path" else str(raw)


def _read_config_file(path: Path) -> dict[str, Any]:
    """sealgate.yml read as hostile data: a regular file under a cap, parsed by the strict
    loader (no aliases, duplicate or non-string keys); each error names the file and line."""
    if not os.path.lexists(path):
        return {}
    try:
        text = read_capped(path, what="settings file", limit=CONFIG_LIMIT)
    except ConfigError as exc:
        raise SealgateError(exc.message) from None
    try:
        document = load_yaml(text, source=str(path))
    except InputError as exc:
        raise SealgateError(exc.message, hint=exc.hint) from None
    if document is None:
        return {}
    if not isinstance(document, LinedDict):
        raise SealgateError(f"{path} line 1: expected a mapping of settings")
    values: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{path} line {document.line_of(key)}: {key}"
        name = key.replace("-", "_")
        if name in _FILE_ALIASES:
            target = _FILE_ALIASES[name]
            if SETTINGS[target].kind == "bool":
                value = not _parse(target, "bool", value, where, path.parent)
            name = target
        if name not in SETTINGS:
            raise SealgateError(f"{path} line {document.line_of(key)}: unknown setting {key!r}")
        if name in _NOT_FROM_THE_REPOSITORY:
            raise SealgateError(
                f"{where}: cannot be set in this file: it is part of the commits under test, so "
                f"a pusher could choose it; use the flag or ${SETTINGS[name].env}"
            )
        if name in values:  # `tsa` and `tsa_urls`, `no-tree` and `check_tree`: one meaning only
            raise SealgateError(f"{where}: sets {name!r} a second time")
        scalars = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in scalars):
            if SETTINGS[name].kind != "bool" or not isinstance(value, bool):
                raise SealgateError(f"{where}: expected a string or a list of strings")
        values[name] = _parse(name, SETTINGS[name].kind, value, where, path.parent)
        if name in _PROOFS and values[name] is False:
            raise SealgateError(
                f"{where}: the commits under test cannot switch off the {_PROOFS[name]} stage; "
                f"use the flag or ${SETTINGS[name].env}"
            )
    return values


def repo_root(repo: Path) -> Path:
    """The top of the work tree `repo` is in (a usage error when it is not a repository)."""
    if not repo.is_dir():
        raise SealgateError(f"--repo {repo}: no such directory")
    return work_tree(repo)


def resolve_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    repo: Path,
    config_file: Path | None = None,
) -> RunConfig:
    """Merge flags > environment > sealgate.yml > defaults into one configuration."""
    root = repo_root(repo)
    from_file = _read_config_file(config_file or root / CONFIG_FILE)
    cwd = Path.cwd()
    values: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        if name in flags and flags[name] is not None:
            value = flags[name]
            if setting.kind == "path":
                value = cwd / value
            elif name == "chain":
                value = [cwd / item for item in value]
        elif env.get(setting.env, "").strip():
            value = _parse(name, setting.kind, env[setting.env], f"${setting.env}", cwd)
        elif name in from_file:
            value = from_file[name]
        else:
            value = setting.default
        values[name] = list(value) if isinstance(value, list) else value
    values["report"] = values["report"] or cwd / DEFAULT_REPORT
    values["attestation"] = values["attestation"] or values["report"].parent / DEFAULT_ATTESTATION
    values["attest_key"] = values["attest_key"] or values["key"]
    return RunConfig(root, values)


@dataclass
class Stage:
    """One stage's outcome for the report and the summaries."""

    name: str
    status: str = SKIPPED
    summary: str = "not run"
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: (path or None, message): what CI plugins turn into file annotations
    annotations: list[tuple[str | None, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "reasons": self.reasons,
            "annotations": [{"file": path, "message": text} for path, text in self.annotations],
            **self.details,
        }


@dataclass
class RunResult:
    """Everything one run did: stages, signatures, verdicts and the exit code."""

    stages: dict[str, Stage]
    commit: str | None = None
    range: str | None = None
    key: str | None = None
    signed: list[SignedArtifact] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    attestation: Path | None = None
    exit_code: int = 0
    #: literal secrets of this run's settings, masked wherever the result is shown
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def as_json(self, root: Path) -> dict[str, Any]:
        return {
            "version": 1,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "repository": str(root),
            "commit": self.commit,
            "range": self.range,
            "key": self.key,
            "stages": [stage.as_json() for stage in self.stages.values()],
            "signatures": [_redacted(s.as_json()) for s in self.signed],
            "verify": [v.as_json() for v in self.verdicts],
            "attestation": str(self.attestation) if self.attestation else None,
        }


def _redacted(document: dict[str, object]) -> dict[str, object]:
    stamp = document.get("timestamp")
    if isinstance(stamp, dict) and isinstance(stamp.get("url"), str):
        document["timestamp"] = {**stamp, "url": redact_url(stamp["url"])}
    return document


@dataclass(frozen=True)
class Prepared:
    """Everything loaded and checked before the first stage, so a typo costs nothing."""

    sign_options: SignOptions
    verify_policy: VerifyPolicy | None
    tsa: TsaSettings | None


def prepare(config: RunConfig) -> Prepared:
    """Check the configuration and load certificates and trust anchors (usage errors: exit 2)."""
    if not config["key"]:
        raise SealgateError("--key is required (or $SEALGATE_KEY, or key: in sealgate.yml)")
    if not config["artifacts"]:
        raise SealgateError(
            "--artifacts GLOB is required (or $SEALGATE_ARTIFACTS, or artifacts: in sealgate.yml)"
        )
    tsa = tsa_settings(
        argparse.Namespace(
            tsa=config["tsa_urls"],
            tsa_roots=config["tsa_roots"],
            tsa_certs=config["tsa_certs"],
            tsa_timeout=config["tsa_timeout"],
            tsa_retries=config["tsa_retries"],
            tsa_concurrency=config["tsa_concurrency"],
        )
    )
    certificate: Path | None = config["certificate"]
    options = SignOptions(
        cert=load_certificate(certificate) if certificate else None,
        chain=[c for path in config["chain"] for c in load_certificates(path)],
        cert_source=str(certificate) if certificate else "--certificate",
        tsa=tsa,
    )
    policy = None
    if config["verify"]:
        if config["trust_roots"] is None:
            raise SealgateError(
                "--trust-roots is required for the verify stage "
                "(or $SEALGATE_TRUST_ROOTS; --no-verify to skip it)"
            )
        parse_identities(config["identity"])  # a malformed identity is a usage error, up front
        policy = VerifyPolicy(
            trust_roots=load_trust_roots(config["trust_roots"], "--trust-roots"),
            tsa_roots=tsa.roots
            if tsa
            else (
                load_trust_roots(config["tsa_roots"], "--tsa-roots") if config["tsa_roots"] else ()
            ),
            tsa_certs=tsa.certs
            if tsa
            else tsa_certs(argparse.Namespace(tsa_certs=config["tsa_certs"])),
            identities=config["identity"],
            require_timestamp=tsa is not None,
        )
    return Prepared(options, policy, tsa)


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
    try:
        head = git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").decode().strip()
    except IntegrityError:
        raise SealgateError(f"{root}: HEAD does not resolve to a commit") from None
    try:
        parent = git(root, "rev-parse", "--verify", "--quiet", "HEAD^").decode().strip()
    except IntegrityError:
        raise SealgateError(
            "HEAD is the root commit: no trusted base to verify it against",
            hint="give --range BASE..HEAD, or --no-commits",
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
            )
        try:
            merge_base = git(root, "merge-base", head, tip).decode().strip()
        except IntegrityError:
            raise SealgateError(f"HEAD has no common history with {refs[0]} ({why})") from None
        if merge_base != head:
            return f"{merge_base}..HEAD", f"merge base with {refs[0]} ({why})"
    raise SealgateError(NO_TRUSTED_BASE)


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


def _split_range(text: str) -> tuple[str, str]:
    base, sep, head = text.partition("..")
    if not sep or not base or not head or head.startswith("."):
        raise SealgateError(f"--range {text!r}: use BASE..HEAD")
    return base, head


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


def match_artifacts(root: Path, globs: Sequence[str]) -> list[Path]:
    """Regular files under the repository matching each glob (signatures excluded).

    A glob that matches nothing is a usage error naming it (exit 2).
    """
    files = [
        (path.relative_to(root).as_posix(), path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.suffix != SIGNATURE_SUFFIX
    ]
    found: dict[Path, None] = {}
    for glob in globs:
        spec = pathspec.PathSpec.from_lines("gitignore", [glob])
        matched = [
            path
            for relative, path in files
            if not relative.startswith(".git/") and spec.match_file(relative)
        ]
        if not matched:
            raise SealgateError(f"artifact glob {glob!r} matches no file in {root}")
        found.update(dict.fromkeys(matched))
    return list(found)


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


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
                stage.reasons.append(exc.diagnostics())
                stage.summary = exc.diagnostics()
                self.result.exit_code = exc.exit_code
                break
            if ok is None:  # the stage found nothing to do
                continue
            stage.status = PASSED if ok else FAILED
            if not ok:
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
        failed = [v for v in verdicts if not v.ok]
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
                {"id": v.oid, "subject": v.subject, "verified": v.ok, "signer": v.signer,
                 "reason": v.reason}
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
        }
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
        }
        build = "build succeeded" if report.build_exit == 0 else "build FAILED"
        stage.summary = (
            f"{build} ({shlex.quote(self.config['build_command'])}); "
            f"{len(report.violations)} violation(s); tree "
            f"{'matches' if report.tree.ok else 'differs'}"
        )
        return report.ok

    def _sign(self, stage: Stage, prepared: Prepared) -> bool:
        artifacts = match_artifacts(self.root, self.config["artifacts"])
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
                (s.artifact.relative_to(self.root).as_posix(), _sha256(s.artifact))
                for s in self.result.signed
            ],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=levels,
        )
        out: Path = self.config["attestation"]
        write_attestation(self.config["attest_key"], statement, out)
        self.result.attestation = out
        stage.summary = f"VSA ({check}: {', '.join(levels)}) written to {out}"
        return True


def config_secrets(config: RunConfig, env: Mapping[str, str]) -> tuple[str, ...]:
    """Every credential the run's settings or environment hold, longest first."""
    found: list[str] = list(environment_secrets(env))
    urls = [*(config.values.get("tsa_urls") or ()), config.values.get("key") or "",
            config.values.get("attest_key") or "", env.get("VAULT_ADDR", ""),
            env.get("BAO_ADDR", ""), env.get("AWS_ENDPOINT_URL", ""),
            env.get("AWS_ENDPOINT_URL_KMS", "")]  # fmt: skip
    for url in urls:
        found += url_secrets(str(url))
        found += pin_values(str(url))
    unique = {value for value in found if len(value) >= MIN_SECRET}
    return tuple(sorted(unique, key=len, reverse=True))


def _redact_document(value: Any, secrets: Sequence[str]) -> Any:
    """The report with `redact_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {
            redact_text(str(k), secrets): _redact_document(v, secrets) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_document(v, secrets) for v in value]
    return value


def human_lines(result: RunResult) -> list[str]:
    """One line per stage, then the verdict; URLs and secrets redacted."""
    lines = [f"{s.name:<8} {s.status:<8} {s.summary}" for s in result.stages.values()]
    for stage in result.stages.values():
        lines += [f"  {stage.name}: {reason}" for reason in stage.reasons[:20]]
    lines.append("sealgate run: " + ("OK" if result.exit_code == 0 else "FAILED"))
    return [redact_text(line, result.secrets) for line in lines]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(result: RunResult) -> str:
    """The job summary: a table of the stages, then a <details> block per artifact."""
    icon = {PASSED: "✅", FAILED: "❌", SKIPPED: "⏭️"}
    lines = [
        f"## Sealgate: {'passed' if result.exit_code == 0 else 'FAILED'}",
        "",
        "| stage | status | details |",
        "|---|---|---|",
    ]
    for stage in result.stages.values():
        detail = stage.summary
        if stage.reasons:
            detail += "<br>" + "<br>".join(_cell(r) for r in stage.reasons[:10])
        lines.append(f"| {stage.name} | {icon[stage.status]} {stage.status} | {_cell(detail)} |")
    verdicts = {v.artifact: v for v in result.verdicts}
    for signed in result.signed:
        verdict = verdicts.get(signed.artifact)
        lines += ["", f"<details><summary><code>{signed.artifact.name}</code></summary>", ""]
        lines.append(f"- signature: `{signed.signature}`")
        lines.append(f"- {signed.hash_name}: `{signed.digest_hex}`")
        lines.append(f"- signer: {signed.certificate_subject} ({signed.scheme})")
        if signed.timestamp:
            lines.append(f"- timestamp: {signed.timestamp.gen_time.isoformat()}")
        if verdict is not None:
            lines.append(
                "- verify: " + ("verified" if verdict.verified else f"FAILED: {verdict.reason}")
            )
        lines += ["", "</details>"]
    return redact_text("\n".join(lines) + "\n", result.secrets)


def write_outputs(result: RunResult, config: RunConfig, env: Mapping[str, str]) -> None:
    """The JSON report, and the Markdown job summary when $GITHUB_STEP_SUMMARY is set."""
    report: Path = config["report"]
    report.parent.mkdir(parents=True, exist_ok=True)
    temporary = report.with_name(report.name + ".tmp")
    document = _redact_document(result.as_json(config.repo), result.secrets)
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, report)
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as stream:
            stream.write(markdown_summary(result))
