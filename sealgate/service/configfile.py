"""service.yml, read strictly: every field known, typed and placed, or a ServiceConfigError
naming the file and line (exit 2). A misspelt `allow_self_hosted` must not be silently off.

Secrets never live in the file: a key URI's PIN comes from its `pin-source` or the environment,
a database password from PGPASSWORD or ~/.pgpass, as `sealgate sign` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from sealgate.service.auth.jwks import allowed_url
from sealgate.service.auth.tokens import ASYMMETRIC, check_issuer
from sealgate.service.config import (
    MAX_LEEWAY,
    AuditConfig,
    ClaimMatcher,
    GrantConfig,
    IssuerConfig,
    KeyConfig,
    MatcherKind,
    Provider,
    ServiceConfig,
)
from sealgate.service.errors import ServiceConfigError
from sealgate.service.grants import check_matcher
from sealgate.service.signing import read_capped_file

#: service.yml is a few hundred lines; anything this large is not one.
CONFIG_LIMIT = 1 << 20
_T = TypeVar("_T")
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_KINDS: tuple[MatcherKind, ...] = ("one_of", "glob", "regex")
_KIND_NAMES: dict[str, MatcherKind] = {kind: kind for kind in _KINDS}
_PROVIDERS: tuple[Provider, ...] = ("github", "gitlab")


def read_config_file(path: Path, *, limit: int = CONFIG_LIMIT) -> bytes:
    """The bytes of service.yml, a regular file of at most `limit` bytes."""
    return read_capped_file(path, what="service config", limit=limit)


class _Reader:
    """Typed access to the YAML nodes of one file, every refusal placed by file and line."""

    def __init__(self, path: Path, loader: yaml.SafeLoader) -> None:
        self.name = str(path)
        self.folder = Path(os.path.abspath(path)).parent
        self._loader = loader
        self._seen: set[int] = set()

    def error(self, node: yaml.Node, where: str, message: str, **kw: Any) -> ServiceConfigError:
        kw.setdefault("code", "bad-service-config")
        return ServiceConfigError(f"{self.at(node)}: {where}: {message}", **kw)

    def at(self, node: yaml.Node) -> str:
        return f"{self.name} line {node.start_mark.line + 1}"

    def _visit(self, node: yaml.Node, where: str) -> None:
        """Each node once: an alias (the same node twice) is refused, so no anchor bomb and no
        value that silently stands for another."""
        if id(node) in self._seen:
            raise self.error(node, where, "anchors and aliases are not allowed")
        self._seen.add(id(node))

    def mapping(
        self, node: yaml.Node, where: str, known: Mapping[str, bool] | None = None
    ) -> dict[str, yaml.Node]:
        """The fields of a mapping by name. With `known` (name -> required), any other name is
        refused, with its line; duplicate names are refused everywhere."""
        self._visit(node, where)
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
            raise self.error(node, where, "must be a mapping")
        fields: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            self._visit(key_node, where)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise self.error(key_node, where, "field names must be plain strings")
            name = str(key_node.value)
            if name in fields:
                raise self.error(key_node, where, f"field {name!r} is given twice", field=name)
            if known is not None and name not in known:
                raise self.error(
                    key_node, where,
                    f"unknown field {name!r} (known: {', '.join(sorted(known))})",
                    code="unknown-config-field", field=name,
                )  # fmt: skip
            fields[name] = value
        for name, required in (known or {}).items():
            if required and name not in fields:
                raise self.error(
                    node, where, f"field {name!r} is required", code="missing-config-field",
                    field=name,
                )  # fmt: skip
        return fields

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        self._visit(node, where)
        if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ:
            raise self.error(node, where, "must be a list")
        return list(node.value)

    def _scalar(self, node: yaml.Node, where: str, tags: set[str], what: str) -> Any:
        self._visit(node, where)
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            raise self.error(node, where, f"must be {what}", field=where.rsplit(".", 1)[-1])
        return self._loader.construct_object(node)

    def string(self, node: yaml.Node, where: str, *, empty: bool = False) -> str:
        value = str(self._scalar(node, where, {_STR}, "a string"))
        if not empty and not value.strip():
            raise self.error(node, where, "must not be empty")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise self.error(node, where, "holds a control character")
        return value

    def claim_value(self, node: yaml.Node, where: str) -> str:
        """A claim's value as the token's normalised string: yes/true -> "true", 20 -> "20"."""
        value = self._scalar(node, where, {_STR, _INT, _BOOL}, "a string, integer or boolean")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def integer(self, node: yaml.Node, where: str, low: int, high: int) -> int:
        value = int(self._scalar(node, where, {_INT}, "an integer"))
        if not low <= value <= high:
            raise self.error(node, where, f"{value} is outside {low}..{high}")
        return value

    def number(self, node: yaml.Node, where: str, low: float, high: float) -> float:
        value = self._scalar(node, where, {_INT, _FLOAT}, "a number")
        if not low <= float(value) <= high:
            raise self.error(node, where, f"{value} is outside {low:g}..{high:g}")
        return float(value)

    def boolean(self, node: yaml.Node, where: str) -> bool:
        return bool(self._scalar(node, where, {_BOOL}, "true or false"))

    def strings(self, node: yaml.Node, where: str) -> tuple[str, ...]:
        """A list of strings; one string stands for a list of one."""
        if isinstance(node, yaml.ScalarNode):
            return (self.string(node, where),)
        return tuple(
            self.string(item, f"{where}[{n}]") for n, item in enumerate(self.sequence(node, where))
        )

    def path(self, node: yaml.Node, where: str) -> Path:
        """A file or folder, relative to service.yml's folder."""
        path = Path(self.string(node, where)).expanduser()
        return path if path.is_absolute() else self.folder / path

    def paths(self, node: yaml.Node, where: str) -> tuple[Path, ...]:
        if isinstance(node, yaml.ScalarNode):
            return (self.path(node, where),)
        return tuple(
            self.path(item, f"{where}[{n}]") for n, item in enumerate(self.sequence(node, where))
        )

    def url(self, node: yaml.Node, where: str, *, https: bool) -> str:
        url = self.string(node, where)
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise self.error(
                node, where, "a URL with credentials; secrets never go in service.yml",
                code="secret-in-config",
            )  # fmt: skip
        if https and not allowed_url(url):
            raise self.error(node, where, "must be an https URL (plain http only to localhost)")
        if (not https and parts.scheme not in {"http", "https"}) or not parts.hostname:
            raise self.error(node, where, "must be an http(s) URL")
        if parts.fragment or (https and parts.query):
            raise self.error(node, where, "must not have a query or fragment")
        return url

    def take(
        self,
        values: dict[str, Any],
        fields: Mapping[str, yaml.Node],
        where: str,
        readers: Mapping[str, Callable[[yaml.Node, str], object]],
    ) -> None:
        """values[name] = read(field) for each optional field that is given; the dataclass's
        default stands for the others."""
        for name, read in readers.items():
            if name in fields:
                values[name] = read(fields[name], f"{where}.{name}")

    def ranged(self, low: int, high: int) -> Callable[[yaml.Node, str], int]:
        return lambda node, where: self.integer(node, where, low, high)

    def seconds(self, low: float, high: float) -> Callable[[yaml.Node, str], float]:
        return lambda node, where: self.number(node, where, low, high)


def load_config(path: Path) -> ServiceConfig:
    """service.yml as a ServiceConfig; ServiceConfigError naming file and line otherwise."""
    data = read_config_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ServiceConfigError(f"{path} line {line}: not YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ServiceConfigError(f"{path}: not YAML: {exc}") from None
    except RecursionError:
        raise ServiceConfigError(f"{path}: nested too deeply to be a service.yml") from None
    if root is None:
        raise ServiceConfigError(f"{path}: empty; issuers and keys are required")
    reader = _Reader(path, loader)
    known = {"issuers": True, "keys": True, "audit": False, "database": False, "listen": False}
    top = reader.mapping(root, "service.yml", known)
    values: dict[str, Any] = {
        "source": str(path),
        "issuers": _issuers(reader, top["issuers"]),
        "keys": _keys(reader, top["keys"]),
        "database": _sqlite_relative(
            str(ServiceConfig.__dataclass_fields__["database"].default), reader.folder
        ),
    }
    reader.take(
        values, top, "service",
        {"audit": lambda n, _w: _audit(reader, n), "database": lambda n, _w: _database(reader, n),
         "listen": lambda n, _w: _listen(reader, n)},
    )  # fmt: skip
    return ServiceConfig(**values)


def _issuers(reader: _Reader, node: yaml.Node) -> tuple[IssuerConfig, ...]:
    items = reader.sequence(node, "issuers")
    if not items:
        raise reader.error(node, "issuers", "at least one issuer is required")
    known = {
        "name": True, "provider": True, "issuer": True, "audience": True, "jwks_url": False,
        "leeway": False, "max_token_age": False, "jwks_refresh_interval": False,
        "algorithms": False,
    }  # fmt: skip
    issuers: list[IssuerConfig] = []
    for n, item in enumerate(items):
        fields = reader.mapping(item, f"issuers[{n}]", known)
        name = reader.string(fields["name"], f"issuers[{n}].name")
        where = f"issuer {name!r}"
        provider = reader.string(fields["provider"], f"{where}.provider")
        if provider not in _PROVIDERS:
            raise reader.error(
                fields["provider"], f"{where}.provider",
                f"{provider!r} is not a provider ({', '.join(_PROVIDERS)})", field="provider",
            )  # fmt: skip
        values: dict[str, Any] = {
            "name": name,
            "provider": provider,
            "issuer": reader.url(fields["issuer"], f"{where}.issuer", https=True),
            "audience": reader.string(fields["audience"], f"{where}.audience"),
        }
        reader.take(
            values, fields, where,
            {"jwks_url": lambda n, w: reader.url(n, w, https=True),
             "leeway": reader.ranged(0, MAX_LEEWAY), "max_token_age": reader.ranged(1, 86400),
             "jwks_refresh_interval": reader.seconds(1.0, 86400.0),
             "algorithms": lambda n, w: _algorithms(reader, n, w)},
        )  # fmt: skip
        config = IssuerConfig(**values)
        try:
            check_issuer(config)
        except ServiceConfigError as exc:
            raise ServiceConfigError(
                f"{reader.at(item)}: {exc.message}", code=exc.code, field=exc.field
            ) from None
        for other in issuers:
            if other.name == name or other.issuer == config.issuer:
                same = "name" if other.name == name else "issuer URL"
                raise reader.error(
                    item, where, f"same {same} as issuer {other.name!r}", code="duplicate-issuer"
                )
        issuers.append(config)
    return tuple(issuers)


def _algorithms(reader: _Reader, node: yaml.Node, where: str) -> tuple[str, ...]:
    algorithms = reader.strings(node, where)
    bad = [alg for alg in algorithms if alg not in ASYMMETRIC]
    if bad or not algorithms:
        raise reader.error(
            node, where,
            f"{', '.join(bad) or 'an empty list'} refused; only {', '.join(sorted(ASYMMETRIC))}",
            code="bad-algorithms", field="algorithms",
        )  # fmt: skip
    return algorithms


def _keys(reader: _Reader, node: yaml.Node) -> dict[str, KeyConfig]:
    """Grants naming an unknown issuer load (they never match): `serve --check` reports them."""
    entries = reader.mapping(node, "keys")
    if not entries:
        raise reader.error(node, "keys", "at least one key is required")
    known = {
        "uri": True, "certificate": False, "chain": False, "tsa": False, "team": False,
        "release": False, "version": False, "pool_size": False, "grants": True,
    }  # fmt: skip
    keys: dict[str, KeyConfig] = {}
    for name, item in entries.items():
        where = f"key {name!r}"
        if not name.strip() or len(name) > 128 or any(ord(c) < 33 or ord(c) == 127 for c in name):
            raise reader.error(item, where, "a key name is 1-128 characters without spaces")
        fields = reader.mapping(item, where, known)
        uri = reader.string(fields["uri"], f"{where}.uri")
        _no_pin(reader, fields["uri"], f"{where}.uri", uri)
        grants_node = fields["grants"]
        grants = tuple(
            _grant(reader, grant, f"{where} grants[{n}]", key=where)
            for n, grant in enumerate(reader.sequence(grants_node, f"{where}.grants"))
        )
        names = [grant.name for grant in grants]
        for grant_name in names:
            if names.count(grant_name) > 1:
                raise reader.error(
                    grants_node, where, f"grant name {grant_name!r} is used twice",
                    code="duplicate-grant",
                )  # fmt: skip
        values: dict[str, Any] = {
            "name": name, "uri": uri, "certificate": None, "grants": grants,
            "source": reader.at(item),
        }  # fmt: skip
        if "tsa" in fields:
            values["tsa_urls"], values["tsa_roots"] = _tsa(reader, fields["tsa"], f"{where}.tsa")
        reader.take(
            values, fields, where,
            {"certificate": reader.path, "chain": reader.paths, "team": reader.string,
             "release": reader.boolean, "version": reader.ranged(1, 1 << 31),
             "pool_size": reader.ranged(1, 256)},
        )  # fmt: skip
        keys[name] = KeyConfig(**values)
    return keys


def _no_pin(reader: _Reader, node: yaml.Node, where: str, uri: str) -> None:
    if "pin-value" in uri.lower():
        raise reader.error(
            node, where,
            "holds a pin-value; secrets never go in service.yml (use pin-source=file:... or "
            "SEALGATE_PKCS11_PIN)",
            code="secret-in-config", field=where.rsplit(".", 1)[-1],
        )  # fmt: skip


def _tsa(reader: _Reader, node: yaml.Node, where: str) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    fields = reader.mapping(node, where, {"urls": True, "roots": False})
    urls_node = fields["urls"]
    if isinstance(urls_node, yaml.ScalarNode):
        items: list[yaml.Node] = [urls_node]
    else:
        items = reader.sequence(urls_node, f"{where}.urls")
    urls = tuple(reader.url(item, f"{where}.urls", https=False) for item in items)
    if not urls:
        raise reader.error(urls_node, f"{where}.urls", "at least one TSA URL is required")
    roots = reader.paths(fields["roots"], f"{where}.roots") if "roots" in fields else ()
    return urls, roots


def _grant(reader: _Reader, node: yaml.Node, where: str, *, key: str) -> GrantConfig:
    known = {
        "name": True, "issuer": True, "claims": True, "max_artifacts": False,
        "max_requests_per_hour": False, "allow_events": False, "allow_self_hosted": False,
    }  # fmt: skip
    fields = reader.mapping(node, where, known)
    name = reader.string(fields["name"], f"{where}.name")
    where = f"{key} grant {name!r}"
    claims_node = fields["claims"]
    claim_fields = reader.mapping(claims_node, f"{where}.claims")
    if not claim_fields:
        raise reader.error(claims_node, f"{where}.claims", "a grant must match at least one claim")
    values: dict[str, Any] = {
        "name": name,
        "issuer": reader.string(fields["issuer"], f"{where}.issuer"),
        "claims": tuple(
            _matcher(reader, claim, value, f"{where}.claims.{claim}")
            for claim, value in claim_fields.items()
        ),
        "source": reader.at(node),
    }
    reader.take(
        values, fields, where,
        {"max_artifacts": reader.ranged(1, 100_000),
         "max_requests_per_hour": reader.ranged(1, 10_000_000),
         "allow_events": reader.strings, "allow_self_hosted": reader.boolean},
    )  # fmt: skip
    return GrantConfig(**values)


def _matcher(reader: _Reader, claim: str, node: yaml.Node, where: str) -> ClaimMatcher:
    """`claim: value` (exact), or a mapping of one of one_of: [...], glob: "...", regex: "^...$"."""
    if isinstance(node, yaml.MappingNode):
        fields = reader.mapping(node, where, dict.fromkeys(_KINDS, False))
        if len(fields) != 1:
            raise reader.error(
                node, where, f"a matcher is exactly one of {', '.join(_KINDS)}",
                code="bad-matcher", field=claim,
            )  # fmt: skip
        kind, value_node = next(iter(fields.items()))
        if kind == "one_of":
            items = reader.sequence(value_node, f"{where}.one_of")
            values = tuple(
                reader.claim_value(item, f"{where}.one_of[{n}]") for n, item in enumerate(items)
            )
        else:
            values = (reader.string(value_node, f"{where}.{kind}"),)
        matcher = ClaimMatcher(claim, _KIND_NAMES[kind], values)
    elif isinstance(node, yaml.SequenceNode):
        raise reader.error(
            node, where, "a list is ambiguous; write {one_of: [...]}", code="bad-matcher",
            field=claim,
        )  # fmt: skip
    else:
        matcher = ClaimMatcher(claim, "exact", (reader.claim_value(node, where),))
    check_matcher(matcher, where=f"{reader.at(node)}: {where}")
    return matcher


def _audit(reader: _Reader, node: yaml.Node) -> AuditConfig:
    known = {
        "key": False, "origin": False, "checkpoint_every": False, "checkpoint_interval": False,
        "tsa": False, "export_dir": False,
    }  # fmt: skip
    fields = reader.mapping(node, "audit", known)
    values: dict[str, Any] = {}
    if "key" in fields:
        values["key_uri"] = reader.string(fields["key"], "audit.key")
        _no_pin(reader, fields["key"], "audit.key", values["key_uri"])
    if "tsa" in fields:
        values["tsa_urls"], values["tsa_roots"] = _tsa(reader, fields["tsa"], "audit.tsa")
    if "origin" in fields:
        origin = reader.string(fields["origin"], "audit.origin")
        if any(ch.isspace() for ch in origin) or "://" in origin:
            raise reader.error(
                fields["origin"], "audit.origin", "a schema-less name without spaces (host/path)"
            )
        values["origin"] = origin
    reader.take(
        values, fields, "audit",
        {"checkpoint_every": reader.ranged(1, 10_000_000),
         "checkpoint_interval": reader.seconds(0.1, 86400.0), "export_dir": reader.path},
    )  # fmt: skip
    return AuditConfig(**values)


def _database(reader: _Reader, node: yaml.Node) -> str:
    url = reader.string(node, "database")
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in {"sqlite", "postgresql", "postgres"}:
        raise reader.error(node, "database", "must be a sqlite:/// or postgresql:// URL")
    if parts.password is not None or "password=" in parts.query.lower():
        raise reader.error(
            node, "database",
            "holds a password; secrets never go in service.yml (use PGPASSWORD, ~/.pgpass or "
            "--db)",
            code="secret-in-config",
        )  # fmt: skip
    return _sqlite_relative(url, reader.folder)


def _sqlite_relative(url: str, folder: Path) -> str:
    """A relative SQLite path is relative to service.yml's folder, like every other path."""
    prefix, _, rest = url.partition(":///")
    if (
        prefix.split("+")[0] == "sqlite"
        and rest
        and not rest.startswith("/")
        and rest != ":memory:"
    ):
        return f"{prefix}:///{folder / rest}"
    return url


def _listen(reader: _Reader, node: yaml.Node) -> str:
    text = reader.string(node, "listen")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise reader.error(node, "listen", f"{text!r} is not HOST:PORT")
    return text
