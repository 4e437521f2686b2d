"""`sealgate run`'s settings: one table, read from flags, then `SEALGATE_*`, then sealgate.yml.

The first source that sets a value wins; sealgate.yml is part of the commits under test, so it
may not choose what is proven (range, policy, base branch) nor switch a source proof off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity.errors import InputError
from integrity.gitobjects import work_tree
from integrity.policy import LinedDict, load_yaml
from sealgate.errors import SealgateError
from signer.errors import ConfigError
from signer.files import read_capped

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
