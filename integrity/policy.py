"""The trusted signing policy (`.sealgate/policy.yml`): who may sign, with which keys, for which paths.

Errors name the file and line, because a policy is written by people and read by the gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec
import yaml

from integrity.errors import InputError, PolicyError
from integrity.files import KEY_FILE_LIMIT, POLICY_LIMIT, read_regular
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


#: Bounds on a YAML document read as data: deeper, bigger or longer is refused, never recursed.
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 100_000
YAML_MAX_SCALAR = 256 * 1024
_STR_TAG = "tag:yaml.org,2002:str"


class YamlError(InputError):
    """A YAML document (a policy, a run config) that is not the strict YAML we read."""

    code = "yaml-invalid"


class LinedDict(dict[str, Any]):
    """A YAML mapping that remembers its own line and each key's line, outside its keys.

    The lines live in attributes, not in a `__line__` entry, so no key a user writes can
    collide with them.
    """

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what a reviewer could misread or that costs without bound:
    aliases (billion laughs), merge keys, duplicate and non-string keys, deep nesting."""

    source = "<yaml>"
    _depth = 0
    _nodes = 0
    _last_mark: Any = None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise YamlError(
                f"{self.source} line {mark.line + 1}: YAML aliases (*name) are not allowed"
            )
        self._nodes += 1
        if self._nodes > YAML_MAX_NODES:
            raise YamlError(f"{self.source}: more than {YAML_MAX_NODES} YAML nodes")
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlError(
                    f"{self.source} line {mark.line + 1}: nested deeper than {YAML_MAX_DEPTH}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self._last_mark = node.start_mark
        return super().construct_object(node, deep)

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:  # type: ignore[override]
        if len(node.value) > YAML_MAX_SCALAR:
            raise YamlError(
                f"{self.source} line {_line(node)}: a value longer than {YAML_MAX_SCALAR} characters"
            )
        if any("\ud800" <= c <= "\udfff" for c in node.value):  # "\ud800" is valid YAML
            raise YamlError(f"{self.source} line {_line(node)}: an unpaired surrogate escape")
        return super().construct_scalar(node)


def _strict_mapping(loader: _StrictLoader, node: yaml.Node) -> LinedDict:
    where = f"{loader.source} line {_line(node)}"
    if not isinstance(node, yaml.MappingNode):
        raise YamlError(f"{where}: expected a mapping")
    mapping = LinedDict()
    mapping.line = _line(node)
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key_where = f"{loader.source} line {_line(key_node)}"
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            kind = key_node.tag.rsplit(":", 1)[-1]
            shown = "a merge key <<" if kind == "merge" else f"!!{kind}"
            raise YamlError(f"{key_where}: mapping keys must be plain strings, not {shown}")
        key = loader.construct_scalar(key_node)
        if not isinstance(key, str):
            raise YamlError(f"{key_where}: mapping keys must be plain strings")
        if key in mapping:
            raise YamlError(
                f"{key_where}: duplicate key {key!r} (first on line {mapping.key_lines[key]})",
                hint="YAML keeps the last one silently; a reviewer reads the first",
            )
        mapping.key_lines[key] = _line(key_node)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _refuse_tag(loader: _StrictLoader, node: yaml.Node) -> Any:
    tag = node.tag.rsplit(":", 1)[-1]
    raise YamlError(f"{loader.source} line {_line(node)}: YAML type !!{tag} is not allowed")


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)
# A `!!set` or `!!omap` would turn what a reviewer reads as a list or mapping into another type.
for _tag in ("set", "omap", "pairs"):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def load_yaml(text: bytes | str, *, source: str) -> Any:
    """One YAML document parsed as hostile data; every failure is an InputError naming
    `source` and, where known, the line."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # the reader already refuses bad encodings and NULs
        loader.source = source
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        raise YamlError(
            f"{source}: not valid YAML (character #x{exc.character:x} at offset {exc.position})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise YamlError(f"{source}{line}: not valid YAML ({problem})") from None
    except (ValueError, TypeError, OverflowError, AttributeError, RecursionError) as exc:
        # odd scalars: `!!timestamp 2026-13-45`, an int of 10**5 digits, `!!binary` garbage
        mark = getattr(loader, "_last_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise YamlError(f"{source}{line}: unreadable YAML value ({type(exc).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_policy_file(path: Path, *, what: str = "policy") -> Policy:
    """A policy from outside the repository, as `commits --policy` reads it: the file and its
    key files regular and under a cap (a FIFO or `/dev/zero` is refused at once), the key
    files inside the policy's own folder (a `../` or absolute path could name any file)."""
    folder = path.parent.resolve()
    text = read_regular(path, what=what, limit=POLICY_LIMIT)

    def key_file(relative: str) -> bytes:
        candidate = path.parent / relative
        if Path(relative).is_absolute() or not candidate.resolve().is_relative_to(folder):
            raise PolicyError(f"outside the policy's folder {path.parent}")
        return read_regular(candidate, what="key file", limit=KEY_FILE_LIMIT)

    return load_policy(text, source=str(path), read_file=key_file)


def load_policy(text: bytes, *, source: str, read_file: Callable[[str], bytes]) -> Policy:
    """Parse and validate a policy; `read_file` reads key files relative to the policy."""
    document = load_yaml(text, source=source)
    if not isinstance(document, LinedDict):
        raise PolicyError(f"{source} line 1: a policy is a mapping with `version` and `signers`")
    version = document.get("version")
    if type(version) is not int or version != 1:  # `version: true` equals 1 in Python
        raise PolicyError(f"{source} line {document.line_of('version')}: `version: 1` is required")
    unknown = set(document) - {"version", "signers", "rules", "forge"}
    if unknown:
        first = sorted(unknown)[0]
        raise PolicyError(
            f"{source} line {document.line_of(first)}: unknown top-level field {first!r}"
        )
    consulted: list[bytes] = []

    def reading(relative: str) -> bytes:
        data = read_file(relative)
        consulted.append(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        return data

    signers = _signers(
        document.get("signers"), _where(source, None, document, "signers"), source, reading
    )
    roles = {role for signer in signers for role in signer.roles}
    rules = _rules(
        document.get("rules") or [], _where(source, None, document, "rules"), source, roles
    )
    forge_mode, forge_keys = _forge(
        document.get("forge"), _where(source, None, document, "forge"), reading
    )
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


def _where(source: str, item: Any, parent: Any = None, key: str = "") -> str:
    """`source line N` of a mapping, or of the key that holds a non-mapping `item`."""
    if isinstance(item, LinedDict):
        return f"{source} line {item.line}"
    if isinstance(parent, LinedDict):
        return f"{source} line {parent.line_of(key)}"
    return source


MAX_NAME = 256


def _string_list(value: Any, where: str, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: `{field}` must be a list of strings")
    return value


def _field_where(source: str, item: LinedDict, key: str) -> str:
    return f"{source} line {item.line_of(key)}"


def _signers(
    value: Any, where_list: str, source: str, read_file: Callable[[str], bytes]
) -> list[Signer]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where_list}: `signers` must be a non-empty list")
    signers: list[Signer] = []
    names: set[str] = set()
    for item in value:
        if not isinstance(item, LinedDict):
            raise PolicyError(f"{where_list}: each signer is a mapping with a `name`")
        where = _where(source, item)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{_field_where(source, item, 'name')}: each signer needs a `name`")
        if len(name) > MAX_NAME or not name.isprintable():
            raise PolicyError(
                f"{_field_where(source, item, 'name')}: a signer name is printable and at most "
                f"{MAX_NAME} characters"
            )
        if name in names:
            raise PolicyError(f"{where}: signer {name!r} appears twice")
        names.add(name)
        unknown = set(item) - {"name", "roles", "ssh", "openpgp"}
        if unknown:
            first = sorted(unknown)[0]
            raise PolicyError(
                f"{_field_where(source, item, first)}: signer {name!r} has unknown field {first!r}"
            )
        roles = _string_list(
            item.get("roles", [DEFAULT_ROLE]), _field_where(source, item, "roles"), "roles"
        )
        if any(len(role) > MAX_NAME or not role.isprintable() for role in roles):
            raise PolicyError(
                f"{_field_where(source, item, 'roles')}: a role is printable and at most "
                f"{MAX_NAME} characters"
            )
        ssh_where = where  # key errors name the signer, as they always have
        ssh = [
            parse_public_key(line, where=f"{ssh_where} (signer {name!r} ssh key {i + 1})")
            for i, line in enumerate(_string_list(item.get("ssh"), ssh_where, "ssh"))
        ]
        pgp_where = where
        openpgp = [
            _openpgp_key(entry, f"{pgp_where} (signer {name!r} openpgp key {i + 1})", read_file)
            for i, entry in enumerate(_string_list(item.get("openpgp"), pgp_where, "openpgp"))
        ]
        if not ssh and not openpgp:
            raise PolicyError(f"{where}: signer {name!r} has no `ssh` or `openpgp` key")
        signers.append(Signer(name, frozenset(roles), tuple(ssh), tuple(openpgp)))
    return signers


def _openpgp_key(entry: str, where: str, read_file: Callable[[str], bytes]) -> OpenPgpKey:
    if entry.lstrip().startswith("-----BEGIN PGP"):
        return load_openpgp_key(entry, where=where)
    try:
        data = read_file(entry)
    except (OSError, KeyError, ValueError):
        raise PolicyError(f"{where}: key file {entry!r} not found beside the policy") from None
    except InputError as exc:  # a FIFO, a device, too big, outside the repository: say which
        raise PolicyError(f"{where}: key file {entry!r}: {exc.message}") from None
    return load_openpgp_key(data, where=f"{where} ({entry})")


def _rules(value: Any, where_list: str, source: str, roles: set[str]) -> list[Rule]:
    if not isinstance(value, list):
        raise PolicyError(f"{where_list}: `rules` must be a list")
    rules: list[Rule] = []
    for item in value:
        if not isinstance(item, LinedDict):
            raise PolicyError(f"{where_list}: each rule is a mapping with `paths` and `require`")
        where = _where(source, item)
        unknown = set(item) - {"paths", "require"}
        if unknown:
            first = sorted(unknown)[0]
            raise PolicyError(f"{_field_where(source, item, first)}: unknown rule field {first!r}")
        patterns = _string_list(item.get("paths"), _field_where(source, item, "paths"), "paths")
        require = item.get("require")
        if not patterns or not isinstance(require, str):
            raise PolicyError(f"{where}: each rule needs `paths` and a `require` role")
        if require not in roles:
            raise PolicyError(
                f"{where}: rule requires role {require!r}, which no signer holds",
                hint="add the role to a signer, or fix the rule",
            )
        try:
            spec = pathspec.PathSpec.from_lines("gitignore", patterns)
        except (ValueError, TypeError) as exc:
            raise PolicyError(
                f"{_field_where(source, item, 'paths')}: not a gitignore-style pattern ({exc})"
            ) from None
        rules.append(Rule(tuple(patterns), require, spec))
    return rules


def _forge(
    value: Any, where: str, read_file: Callable[[str], bytes]
) -> tuple[str | None, list[OpenPgpKey]]:
    if value is None:
        return None, []
    if not isinstance(value, LinedDict):
        raise PolicyError(f"{where}: `forge` must be a mapping")
    unknown = set(value) - {"github-web-flow", "openpgp"}
    if unknown:
        raise PolicyError(f"{where}: unknown forge field {sorted(unknown)[0]!r}")
    mode = value.get("github-web-flow")
    if mode is not None and mode not in FORGE_MODES:
        raise PolicyError(f"{where}: `github-web-flow` must be one of {', '.join(FORGE_MODES)}")
    keys = [
        _openpgp_key(entry, f"{where} (forge key {i + 1})", read_file)
        for i, entry in enumerate(_string_list(value.get("openpgp"), where, "openpgp"))
    ]
    if mode is not None and not keys:
        raise PolicyError(
            f"{where}: `github-web-flow` needs the forge's public key under `forge.openpgp`",
            hint="export it from https://github.com/web-flow.gpg into the repository",
        )
    return mode, keys
