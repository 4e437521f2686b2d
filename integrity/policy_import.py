"""Policies from where users' keys already are: git's allowed-signers file, sequoia-git's
openpgp-policy.toml. The result is a Sealgate policy document plus notes on what did not carry
over (dates, CA keys, rights without an equivalent), so nothing is dropped silently."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from integrity.errors import InputError
from integrity.openpgp import parse_sequoia_policy
from integrity.policy import ADMIN_ROLE, DEFAULT_ROLE
from integrity.sshsig import parse_allowed_signers

#: sequoia-git right -> Sealgate role; rights without an equivalent are reported, not guessed.
SEQUOIA_ROLES = {
    "sign_commit": DEFAULT_ROLE,
    "sign_tag": DEFAULT_ROLE,
    "add_user": ADMIN_ROLE,
    "retire_user": ADMIN_ROLE,
}


@dataclass
class Imported:
    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _name(principal: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._@-]+", "-", principal).strip("-") or "signer"
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}-{counter}", counter + 1
    taken.add(name)
    return name


def from_allowed_signers(text: str, *, source: str) -> Imported:
    """One signer per principal set, role `developer`; policy-admins must be granted by hand."""
    imported = Imported({"version": 1, "signers": []})
    by_principals: dict[tuple[str, ...], dict[str, Any]] = {}
    taken: set[str] = set()
    for entry in parse_allowed_signers(text, source=source):
        where = f"{source} line {entry.line}"
        if entry.cert_authority:
            imported.notes.append(f"{where}: cert-authority keys are not supported; skipped")
            continue
        if entry.namespaces is not None and "git" not in entry.namespaces:
            imported.notes.append(f"{where}: key not allowed for the `git` namespace; skipped")
            continue
        if entry.valid_after or entry.valid_before:
            imported.notes.append(
                f"{where}: valid-after/valid-before dropped: Sealgate judges key validity by "
                "the commit graph (policy changes), never by signer-controlled dates"
            )
        signer = by_principals.get(entry.principals)
        if signer is None:
            signer = {
                "name": _name(entry.principals[0], taken),
                "roles": [DEFAULT_ROLE],
                "ssh": [],
            }
            by_principals[entry.principals] = signer
            imported.document["signers"].append(signer)
        signer["ssh"].append(entry.key.openssh_line())
    if not imported.document["signers"]:
        imported.notes.append(f"{source}: no usable key; the policy needs at least one signer")
    imported.notes.append("grant `policy-admin` to the people who may change the policy")
    return imported


def from_sequoia_policy(text: str, *, source: str) -> Imported:
    """Each authorization becomes a signer with its keyring and the roles its rights map to."""
    imported = Imported({"version": 1, "signers": []})
    taken: set[str] = set()
    try:
        authorizations = parse_sequoia_policy(text, source=source)
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(f"{source}: not valid TOML (nested too deeply)") from None
    for authorization in authorizations:
        roles = sorted({SEQUOIA_ROLES[r] for r in authorization.rights if r in SEQUOIA_ROLES})
        dropped = sorted(authorization.rights - SEQUOIA_ROLES.keys())
        if dropped:
            imported.notes.append(
                f"{source}: authorization {authorization.name!r}: rights {', '.join(dropped)} "
                "have no Sealgate role and were not carried over"
            )
        if not authorization.keys:
            imported.notes.append(
                f"{source}: authorization {authorization.name!r} has no key; skipped"
            )
            continue
        imported.document["signers"].append(
            {
                "name": _name(authorization.name, taken),
                "roles": roles,
                "openpgp": [key.armored for key in authorization.keys],
            }
        )
    return imported
