"""Option groups shared by several commands, so each means the same everywhere.

Each shared option is one `Setting`: its flags, environment variable, kind, default and help.
Defaults come from the library dataclasses (`TsaSettings`, `VerifyPolicy`); argparse's default
is None, and `resolve()` fills an unset option from the environment, then from the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from integrity.policy import Policy, load_policy_file
from sealgate.errors import SealgateError
from signer.chain import load_trust_roots, load_untrusted
from signer.redact import redact_url
from signer.timestamp import TsaSettings
from signer.verify import Level, VerifyPolicy, load_crl, parse_identities

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configuration value: its environment variable and how text becomes the value."""

    env: str
    #: str | path | paths | list (comma or newline) | lines (newline only) | bool | int | float
    kind: str
    default: Any = None
    flags: tuple[str, ...] = ()
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


_TSA = _defaults(TsaSettings)
_VERIFY = _defaults(VerifyPolicy)

#: The RFC 3161 options of `sign`, `timestamp` and `run`.
TSA_OPTIONS: dict[str, Setting] = {
    "tsa_urls": Setting(
        "SEALGATE_TSA_URLS", "list", (), ("--tsa", "--tsa-url"), "timestamp authority; repeat "
        "for fallbacks, tried in order", "URL",
    ),
    "tsa_roots": Setting(
        "SEALGATE_TSA_ROOTS", "path", None, ("--tsa-roots",),
        "trust anchors (PEM) for the TSA certificates; required with --tsa", "PEM",
    ),
    "tsa_certs": Setting(
        "SEALGATE_TSA_CERTS", "path", None, ("--tsa-certs",), "untrusted TSA certificates and "
        "intermediates (PEM), for tokens that do not carry them; trust still comes from "
        "--tsa-roots", "PEM",
    ),
    "tsa_timeout": Setting(
        "SEALGATE_TSA_TIMEOUT", "float", _TSA["timeout"], ("--tsa-timeout",),
        "seconds per request", "SECONDS",
    ),
    "tsa_retries": Setting(
        "SEALGATE_TSA_RETRIES", "int", _TSA["retries"], ("--tsa-retries",),
        "retries per TSA (backoff)", "N",
    ),
    "tsa_concurrency": Setting(
        "SEALGATE_TSA_CONCURRENCY", "int", _TSA["concurrency"], ("--tsa-concurrency",),
        "requests in flight at once for a batch", "N",
    ),
}  # fmt: skip

#: The gate's options, shared by `verify` and `run`'s verify stage.
VERIFY_OPTIONS: dict[str, Setting] = {
    "trust_roots": Setting(
        "SEALGATE_TRUST_ROOTS", "path", None, ("--trust-roots",),
        "trust anchors (PEM) for signer certificates", "PEM",
    ),
    "tsa_roots": TSA_OPTIONS["tsa_roots"],
    "tsa_certs": TSA_OPTIONS["tsa_certs"],
    "require_timestamp": Setting(
        "SEALGATE_REQUIRE_TIMESTAMP", "bool", _VERIFY["require_timestamp"],
        ("--require-timestamp",), "refuse signatures without a trusted token",
    ),
    "identity": Setting(
        "SEALGATE_IDENTITY", "lines", tuple(_VERIFY["identities"]), ("--identity",),
        "allowed signer: subject:CN=..,O=.. (a bare value is a subject DN), email:ADDR, "
        "dns:NAME or uri:URI, each matched only against names of its own kind; repeatable "
        "(the variable: one per line)", "[subject:|email:|dns:|uri:]VALUE",
    ),
    "at": Setting(
        "SEALGATE_AT", "str", None, ("--at",),
        "judge validity at this ISO 8601 time instead of now", "TIME",
    ),
    "crl": Setting(
        "SEALGATE_CRL", "paths", tuple(_VERIFY["crls"]), ("--crl",),
        "CRL file (PEM or DER); repeatable", "FILE",
    ),
    "level": Setting(
        "SEALGATE_LEVEL", "str", _VERIFY["level"].value, ("--level",),
        "strict: enforce everything; audit: expiry, timestamp and revocation problems are "
        "warnings", None, tuple(level.value for level in Level),
    ),
}  # fmt: skip


def parse_setting(kind: str, raw: Any, where: str, base: Path) -> Any:
    """Turn a text (env) or YAML value into the setting's type; bad input names its source."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SealgateError(
            f"{where}: {raw!r} is not a boolean (use true or false)", code="bad-setting"
        )
    if kind in ("int", "float"):
        try:
            return int(raw) if kind == "int" else float(raw)
        except (TypeError, ValueError):
            raise SealgateError(f"{where}: {raw!r} is not a number", code="bad-setting") from None
    if kind in ("list", "lines", "paths"):
        if isinstance(raw, list):
            items = [str(item).strip() for item in raw]
        elif isinstance(raw, str):
            separated = raw if kind == "lines" else raw.replace(",", "\n")
            items = [item.strip() for item in separated.splitlines()]
        else:
            raise SealgateError(
                f"{where}: expected a list or a string, got {raw!r}", code="bad-setting"
            )
        items = [_text(item, where) for item in items if item]
        return [base / item for item in items] if kind == "paths" else items
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise SealgateError(f"{where}: expected a string, got {raw!r}", code="bad-setting")
    text = _text(str(raw), where)
    return base / text if kind == "path" else text


def _text(value: str, where: str) -> str:
    """A value without a NUL byte: no path, URI or command holds one, and it would reach the OS
    as a ValueError instead of this one-line error."""
    if "\x00" in value:
        raise SealgateError(f"{where}: {value!r} holds a NUL byte", code="bad-setting")
    return value


def _help(setting: Setting) -> str:
    shown = setting.default not in (None, (), False)
    default = f"default: {setting.default}; " if shown else ""
    return f"{setting.help} ({default}or ${setting.env})"


def add_settings(group: argparse._ActionsContainer, table: Mapping[str, Setting]) -> None:
    """One argparse option per setting; default None, so `resolve` knows it was not given."""
    for name, setting in table.items():
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": _help(setting)}
        if setting.kind == "bool":
            kwargs.update(action="store_const", const=True)
        else:
            kwargs["metavar"] = setting.metavar
            if setting.choices:
                kwargs["choices"] = setting.choices
            if setting.kind in ("list", "lines", "paths"):
                kwargs["action"] = "append"
            kwargs["type"] = {"path": Path, "paths": Path, "int": int, "float": float}.get(
                setting.kind, str
            )
        group.add_argument(*setting.flags, **kwargs)


def resolve(
    args: argparse.Namespace, table: Mapping[str, Setting], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Each setting from its flag, else its variable (empty means unset), else its default."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, setting in table.items():
        value = getattr(args, name, None)
        if value is None and env.get(setting.env, "").strip():
            value = parse_setting(setting.kind, env[setting.env], f"${setting.env}", Path())
        if value is None:
            value = setting.default
        if setting.choices and value not in setting.choices:
            raise SealgateError(
                f"${setting.env} {value!r}: use one of {', '.join(setting.choices)}",
                code="bad-setting",  # no field: the flag's own choices are checked by argparse
            )
        values[name] = list(value) if isinstance(value, list | tuple) else value
    return values


def policy_file(path: Path) -> Policy:
    """`--policy FILE` and its key files (regular, capped, the key files inside its folder)."""
    return load_policy_file(path, what="--policy")


def add_tsa_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """The RFC 3161 group: the same flags, variables, defaults and help in every command."""
    title = "RFC 3161 timestamps" + (" (--tsa or $SEALGATE_TSA_URLS required)" if required else "")
    add_settings(parser.add_argument_group(title), TSA_OPTIONS)


def add_verify_options(parser: argparse.ArgumentParser, *, with_tsa_trust: bool = True) -> None:
    """The gate's group; `with_tsa_trust=False` where the TSA group already has those two."""
    table = {
        name: setting
        for name, setting in VERIFY_OPTIONS.items()
        if with_tsa_trust or name not in ("tsa_roots", "tsa_certs")
    }
    add_settings(parser.add_argument_group("verification"), table)


def tsa_certs(values: Mapping[str, Any]) -> tuple[x509.Certificate, ...]:
    """The --tsa-certs bundle, or none."""
    path = values.get("tsa_certs")
    return tuple(load_untrusted(Path(path), "--tsa-certs")) if path else ()


def tsa_settings(values: Mapping[str, Any], *, required: bool = False) -> TsaSettings | None:
    """The TSA settings the options describe; None when no TSA was asked for."""
    urls = list(values.get("tsa_urls") or ())
    if not urls:
        if required:
            raise SealgateError(
                "--tsa URL is required (or set SEALGATE_TSA_URLS)",
                code="missing-option",
                field="tsa_urls",
            )
        return None
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SealgateError(
                f"--tsa {redact_url(url)!r}: not an http(s) URL", code="bad-url", field="tsa_urls"
            )
    if values.get("tsa_roots") is None:
        raise SealgateError(
            "--tsa-roots is required with --tsa: a timestamp is used only when its TSA "
            "certificate chains to a root you trust",
            code="missing-option",
            field="tsa_roots",
        )
    _within(values, "tsa_timeout", 0 < values["tsa_timeout"] <= 600, "between 0 and 600 seconds")
    _within(values, "tsa_retries", 0 <= values["tsa_retries"] <= 10, "between 0 and 10")
    _within(values, "tsa_concurrency", 1 <= values["tsa_concurrency"] <= 64, "between 1 and 64")
    return TsaSettings(
        urls=tuple(urls),
        roots=tuple(load_trust_roots(Path(values["tsa_roots"]), "--tsa-roots")),
        certs=tsa_certs(values),
        timeout=values["tsa_timeout"],
        retries=values["tsa_retries"],
        concurrency=values["tsa_concurrency"],
    )


def _within(values: Mapping[str, Any], name: str, ok: bool, bounds: str) -> None:
    if not ok:
        raise SealgateError(
            f"{TSA_OPTIONS[name].flags[0]} must be {bounds}", code="out-of-range", field=name
        )


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time (Z allowed); a naive one is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SealgateError(
            f"{text!r}: not an ISO 8601 time", code="bad-time", field="at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def verify_policy(
    values: Mapping[str, Any],
    *,
    tsa: TsaSettings | None = None,
    signature_dir: Path | None = None,
    purpose: str = "",
    otherwise: str = "",
) -> VerifyPolicy:
    """The gate's policy from the shared verify options; `tsa` when the same run signs with one
    (its roots and certificates are reused, and a timestamp is then required)."""
    if values.get("trust_roots") is None:
        raise SealgateError(
            f"--trust-roots is required{purpose} (or set SEALGATE_TRUST_ROOTS{otherwise})",
            code="missing-option",
            field="trust_roots",
        )
    parse_identities(values["identity"])  # a malformed identity is a usage error (exit 2) now
    tsa_roots = values.get("tsa_roots")
    return VerifyPolicy(
        trust_roots=load_trust_roots(Path(values["trust_roots"]), "--trust-roots"),
        tsa_roots=tsa.roots
        if tsa
        else (tuple(load_trust_roots(Path(tsa_roots), "--tsa-roots")) if tsa_roots else ()),
        tsa_certs=tsa.certs if tsa else tsa_certs(values),
        identities=values["identity"],
        at=parse_time(values["at"]) if values.get("at") else None,
        require_timestamp=bool(values["require_timestamp"]) or tsa is not None,
        crls=[load_crl(Path(path)) for path in values["crl"]],
        level=Level(values["level"]),
        signature_dir=signature_dir,
    )
