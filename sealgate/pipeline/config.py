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
from integrity.policy import LinedDict, load_yaml
from integrity.repository import open_repository
from sealgate.errors import SealgateError
from sealgate.options import TSA_OPTIONS, VERIFY_OPTIONS, Setting, parse_setting
from signer.errors import ConfigError
from signer.files import read_capped

CONFIG_FILE = "sealgate.yml"
DEFAULT_REPORT = "sealgate-report.json"
DEFAULT_ATTESTATION = "sealgate-vsa.intoto.json"
CONFIG_LIMIT = 1 << 20  # sealgate.yml: settings, never data

#: What decides which commits are proven and against what: never read from the work tree's
#: sealgate.yml, which the commits under test can change. Nor how leniently the verify stage
#: judges (`level: audit`, an `at` in the past), what it trusts (a pusher can certify the HSM's
#: public key under a root of their own), or which key on the token signs. Nor where the job's
#: OIDC token goes (`service`: a pusher's own server would receive it) or what it is for.
_NOT_FROM_THE_REPOSITORY = frozenset(
    {"range", "policy", "base_branch", "level", "at", "trust_roots", "tsa_roots", "key",
     "attest_key", "service", "service_key", "service_audience", "id_token_var"}
)  # fmt: skip
#: What a local key needs and the signing service decides: refused beside `service`.
_LOCAL_SIGNING = ("key", "certificate", "chain", "tsa_urls")
#: The proofs this file may switch on but never off.
_PROOFS = {
    "verify_commits": "commits",
    "check_tree": "tree",
    "verify": "verify",
    "require_timestamp": "timestamp requirement of the verify",
}

#: name (the flag's dest, the sealgate.yml key) -> setting: the one place defaults live; the
#: options shared with `sign` and `verify` come from their tables in sealgate.options.
SETTINGS: dict[str, Setting] = {
    "range": Setting("SEALGATE_RANGE", "str"),
    "policy": Setting("SEALGATE_POLICY", "path"),
    "base_branch": Setting("SEALGATE_BASE_BRANCH", "str"),
    "build_command": Setting("SEALGATE_BUILD_COMMAND", "str"),
    "artifacts": Setting("SEALGATE_ARTIFACTS", "list", ()),
    "outputs": Setting("SEALGATE_OUTPUTS", "list", ()),
    "caches": Setting("SEALGATE_CACHES", "list", ()),
    "submodules": Setting("SEALGATE_SUBMODULES", "str", "prove"),
    "key": Setting("SEALGATE_KEY", "str"),
    "service": Setting("SEALGATE_SERVICE", "str"),
    "service_key": Setting("SEALGATE_SERVICE_KEY", "str"),
    "service_audience": Setting("SEALGATE_SERVICE_AUDIENCE", "str"),
    "id_token_var": Setting("SEALGATE_ID_TOKEN_VAR", "str", "SEALGATE_ID_TOKEN"),
    "certificate": Setting("SEALGATE_CERTIFICATE", "path"),
    "chain": Setting("SEALGATE_CHAIN", "paths", ()),
    "verify_commits": Setting("SEALGATE_VERIFY_COMMITS", "bool", True),
    "check_tree": Setting("SEALGATE_CHECK_TREE", "bool", True),
    "verify": Setting("SEALGATE_VERIFY", "bool", True),
    "attest": Setting("SEALGATE_ATTEST", "bool", True),
    "attest_key": Setting("SEALGATE_ATTEST_KEY", "str"),
    "attestation": Setting("SEALGATE_ATTESTATION", "path"),
    "report": Setting("SEALGATE_REPORT", "path"),
    **TSA_OPTIONS,
    **VERIFY_OPTIONS,
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


def _read_config_file(path: Path) -> dict[str, Any]:
    """sealgate.yml read as hostile data: a regular file under a cap, parsed by the strict
    loader (no aliases, duplicate or non-string keys); each error names the file and line."""
    if not os.path.lexists(path):
        return {}
    try:
        text = read_capped(path, what="settings file", limit=CONFIG_LIMIT)
    except ConfigError as exc:
        raise SealgateError(exc.message, code=exc.code, field="config") from None
    try:
        document = load_yaml(text, source=str(path))
    except InputError as exc:
        raise SealgateError(exc.message, hint=exc.hint, code="bad-setting") from None
    if document is None:
        return {}
    if not isinstance(document, LinedDict):
        raise SealgateError(f"{path} line 1: expected a mapping of settings", code="bad-setting")
    values: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{path} line {document.line_of(key)}: {key}"
        name = key.replace("-", "_")
        if name in _FILE_ALIASES:
            target = _FILE_ALIASES[name]
            if SETTINGS[target].kind == "bool":
                value = not parse_setting("bool", value, where, path.parent)
            name = target
        if name not in SETTINGS:
            raise SealgateError(
                f"{path} line {document.line_of(key)}: unknown setting {key!r}",
                code="unknown-setting",
            )
        if name in _NOT_FROM_THE_REPOSITORY:
            raise SealgateError(
                f"{where}: cannot be set in this file: it is part of the commits under test, so "
                f"a pusher could choose it; use the flag or ${SETTINGS[name].env}",
                code="setting-not-allowed",
            )
        if name in values:  # `tsa` and `tsa_urls`, `no-tree` and `check_tree`: one meaning only
            raise SealgateError(f"{where}: sets {name!r} a second time", code="bad-setting")
        scalars = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in scalars):
            if SETTINGS[name].kind != "bool" or not isinstance(value, bool):
                raise SealgateError(
                    f"{where}: expected a string or a list of strings", code="bad-setting"
                )
        values[name] = parse_setting(SETTINGS[name].kind, value, where, path.parent)
        if name in _PROOFS and values[name] is False:
            raise SealgateError(
                f"{where}: the commits under test cannot switch off the {_PROOFS[name]} stage; "
                f"use the flag or ${SETTINGS[name].env}",
                code="setting-not-allowed",
            )
    return values


def repo_root(repo: Path) -> Path:
    """The top of the work tree `repo` is in, opened as every check opens it (integrity)."""
    return open_repository(repo)


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
            elif setting.kind == "paths":
                value = [cwd / item for item in value]
        elif env.get(setting.env, "").strip():
            value = parse_setting(setting.kind, env[setting.env], f"${setting.env}", cwd)
        elif name in from_file:
            value = from_file[name]
        else:
            value = setting.default
        if setting.choices and value not in setting.choices:
            raise SealgateError(
                f"{name} {value!r}: use one of {', '.join(setting.choices)}",
                code="bad-setting",
                field=name,
            )
        values[name] = list(value) if isinstance(value, list | tuple) else value
    values["report"] = values["report"] or cwd / DEFAULT_REPORT
    values["attestation"] = values["attestation"] or values["report"].parent / DEFAULT_ATTESTATION
    values["attest_key"] = values["attest_key"] or values["key"]
    _check_service(values)
    return RunConfig(root, values)


def _check_service(values: Mapping[str, Any]) -> None:
    """Signing through the service means no key, PIN, certificate or TSA in the job: one or the
    other, never both (a half-local run would sign with whichever a reader did not expect)."""
    if not values["service"]:
        for name in ("service_key", "service_audience"):
            if values[name]:
                raise SealgateError(
                    f"{name} is set but service is not", code="option-conflict", field=name
                )
        return
    for name in _LOCAL_SIGNING:
        if values[name]:
            raise SealgateError(
                f"{name} cannot be set with service: the signing service holds the key, its "
                "certificate and its timestamps (drop the local signing settings)",
                code="option-conflict",
                field=name,
            )
    if not values["service_key"]:
        raise SealgateError(
            "service_key is required with service: the service's key name "
            "(--service-key or $SEALGATE_SERVICE_KEY)",
            code="missing-option",
            field="service_key",
        )
