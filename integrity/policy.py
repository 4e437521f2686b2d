"""The trusted signing policy (`.sealgate/policy.yml`): who may sign, with which keys, for which paths.

Errors name the file and line, because a policy is written by people and read by the gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pathspec
import yaml

from integrity.errors import InputError
from integrity.openpgp import OpenPgpKey, OpenPgpKeyring, load_openpgp_key
from integrity.sshsig import SshPublicKey, parse_public_key

POLICY_PATH = ".sealgate/policy.yml"
DEFAULT_ROLE = "developer"
ADMIN_ROLE = "policy-admin"
FORGE_MODES = ("merges-only", "all")


@dataclass(frozen=True)
class Signer:
    name: str
    roles: frozenset[str]
    ssh: tuple[SshPublicKey, ...]
    openpgp: tuple[OpenPgpKey, ...]


@dataclass(frozen=True)
class Rule:
    """Commits touching `paths` (gitignore-style) need a signer holding `require`."""

    patterns: tuple[str, ...]
    require: str
    spec: pathspec.PathSpec[Any]

    def matches(self, path: str) -> bool:
        return self.spec.match_file(path)


@dataclass(frozen=True)
class Policy:
    source: str
    digest: str
    signers: tuple[Signer, ...]
    rules: tuple[Rule, ...]
    forge_web_flow: str | None
    forge_keys: tuple[OpenPgpKey, ...]
    ssh_index: dict[bytes, Signer] = field(repr=False)
    openpgp_index: dict[str, Signer] = field(repr=False)
    keyring: OpenPgpKeyring = field(repr=False)
    forge_keyring: OpenPgpKeyring = field(repr=False)

    def signer_for_ssh(self, key: SshPublicKey) -> Signer | None:
        return self.ssh_index.get(key.blob)

    def signer_for_openpgp(self, key: OpenPgpKey) -> Signer | None:
        return self.openpgp_index.get(key.fingerprint)

    def required_roles(self, paths: list[str]) -> set[str]:
        """The roles a commit touching `paths` needs: the default plus every matching rule."""
        roles = {DEFAULT_ROLE}
        for rule in self.rules:
            if any(rule.matches(path) for path in paths):
                roles.add(rule.require)
        return roles


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping, so errors can name it."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = dict(loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def load_policy(text: bytes, *, source: str, read_file: Callable[[str], bytes]) -> Policy:
    """Parse and validate a policy; `read_file` reads key files relative to the policy."""
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(
            f"{source}{line}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(document, dict):
        raise InputError(f"{source}: a policy is a mapping with `version` and `signers`")
    if document.get("version") != 1:
        raise InputError(f"{source} line {document['__line__']}: `version: 1` is required")
    unknown = set(document) - {"version", "signers", "rules", "forge", "__line__"}
    if unknown:
        raise InputError(f"{source}: unknown top-level field {sorted(unknown)[0]!r}")
    consulted: list[bytes] = []

    def reading(relative: str) -> bytes:
        data = read_file(relative)
        consulted.append(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        return data

    signers = _signers(document.get("signers"), source, reading)
    roles = {role for signer in signers for role in signer.roles}
    rules = _rules(document.get("rules") or [], source, roles)
    forge_mode, forge_keys = _forge(document.get("forge"), source, reading)
    return Policy(
        source=source,
        # the key files are part of the policy: a changed key file is a changed policy
        digest=hashlib.sha256(text + b"".join(sorted(consulted))).hexdigest(),
        signers=tuple(signers),
        rules=tuple(rules),
        forge_web_flow=forge_mode,
        forge_keys=tuple(forge_keys),
        ssh_index={key.blob: s for s in signers for key in s.ssh},
        openpgp_index={key.fingerprint: s for s in signers for key in s.openpgp},
        keyring=OpenPgpKeyring([key for s in signers for key in s.openpgp]),
        forge_keyring=OpenPgpKeyring(forge_keys),
    )


def _where(source: str, item: Any) -> str:
    line = item.get("__line__") if isinstance(item, dict) else None
    return f"{source} line {line}" if line else source


def _string_list(value: Any, where: str, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: `{field}` must be a list of strings")
    return value


def _signers(value: Any, source: str, read_file: Callable[[str], bytes]) -> list[Signer]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{source}: `signers` must be a non-empty list")
    signers: list[Signer] = []
    names: set[str] = set()
    for item in value:
        where = _where(source, item)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError(f"{where}: each signer needs a `name`")
        name = item["name"]
        if name in names:
            raise InputError(f"{where}: signer {name!r} appears twice")
        names.add(name)
        unknown = set(item) - {"name", "roles", "ssh", "openpgp", "__line__"}
        if unknown:
            raise InputError(f"{where}: signer {name!r} has unknown field {sorted(unknown)[0]!r}")
        roles = _string_list(item.get("roles", [DEFAULT_ROLE]), where, "roles")
        ssh = [
            parse_public_key(line, where=f"{where} (signer {name!r} ssh key {i + 1})")
            for i, line in enumerate(_string_list(item.get("ssh"), where, "ssh"))
        ]
        openpgp = [
            _openpgp_key(entry, f"{where} (signer {name!r} openpgp key {i + 1})", read_file)
            for i, entry in enumerate(_string_list(item.get("openpgp"), where, "openpgp"))
        ]
        if not ssh and not openpgp:
            raise InputError(f"{where}: signer {name!r} has no `ssh` or `openpgp` key")
        signers.append(Signer(name, frozenset(roles), tuple(ssh), tuple(openpgp)))
    return signers


def _openpgp_key(entry: str, where: str, read_file: Callable[[str], bytes]) -> OpenPgpKey:
    if entry.lstrip().startswith("-----BEGIN PGP"):
        return load_openpgp_key(entry, where=where)
    try:
        data = read_file(entry)
    except (OSError, KeyError, InputError):
        raise InputError(f"{where}: key file {entry!r} not found beside the policy") from None
    return load_openpgp_key(data, where=f"{where} ({entry})")


def _rules(value: Any, source: str, roles: set[str]) -> list[Rule]:
    if not isinstance(value, list):
        raise InputError(f"{source}: `rules` must be a list")
    rules: list[Rule] = []
    for item in value:
        where = _where(source, item)
        if not isinstance(item, dict):
            raise InputError(f"{where}: each rule is a mapping with `paths` and `require`")
        patterns = _string_list(item.get("paths"), where, "paths")
        require = item.get("require")
        if not patterns or not isinstance(require, str):
            raise InputError(f"{where}: each rule needs `paths` and a `require` role")
        if require not in roles:
            raise InputError(
                f"{where}: rule requires role {require!r}, which no signer holds",
                hint="add the role to a signer, or fix the rule",
            )
        spec = pathspec.PathSpec.from_lines("gitignore", patterns)
        rules.append(Rule(tuple(patterns), require, spec))
    return rules


def _forge(
    value: Any, source: str, read_file: Callable[[str], bytes]
) -> tuple[str | None, list[OpenPgpKey]]:
    if value is None:
        return None, []
    where = _where(source, value)
    if not isinstance(value, dict):
        raise InputError(f"{where}: `forge` must be a mapping")
    mode = value.get("github-web-flow")
    if mode is not None and mode not in FORGE_MODES:
        raise InputError(f"{where}: `github-web-flow` must be one of {', '.join(FORGE_MODES)}")
    keys = [
        _openpgp_key(entry, f"{where} (forge key {i + 1})", read_file)
        for i, entry in enumerate(_string_list(value.get("openpgp"), where, "openpgp"))
    ]
    if mode is not None and not keys:
        raise InputError(
            f"{where}: `github-web-flow` needs the forge's public key under `forge.openpgp`",
            hint="export it from https://github.com/web-flow.gpg into the repository",
        )
    return mode, keys
