"""Certificate paths: a leaf up to a trust root, at a given moment, for one extended key usage.

Path building and the X.509 rules come from cryptography's verifier; in front of it, the
common failures (expired, wrong usage) are checked one by one so the user reads the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as PathError,
)

from signer.certificates import (
    Purpose,
    describe,
    load_certificates,
    usage_problem,
    validity_problem,
)
from signer.errors import ConfigError, VerificationError


def load_trust_roots(path: Path, what: str) -> list[x509.Certificate]:
    roots = load_certificates(path)
    for root in roots:
        if not _is_ca(root):
            raise ConfigError(f"{what} {path}: {describe(root)!r} is not a CA certificate")
    return roots


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_usage(cert: x509.Certificate, purpose: Purpose) -> None:
    """The leaf's extended key usage, with the reason spelled out when it is wrong."""
    problem = usage_problem(cert, purpose)
    if problem:
        raise VerificationError(problem)


def check_validity(cert: x509.Certificate, at: dt.datetime, role: str = "certificate") -> None:
    problem = validity_problem(cert, at, role)
    if problem:
        raise VerificationError(problem)


def validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    purpose: Purpose,
) -> list[x509.Certificate]:
    """The validated chain from `leaf` to one of `roots` at `at`; VerificationError otherwise."""
    check_usage(leaf, purpose)
    check_validity(leaf, at)

    def usage_present(_policy: object, _cert: x509.Certificate, ext: object) -> None:
        if not isinstance(ext, x509.ExtendedKeyUsage) or purpose.oid not in ext:
            raise ValueError(f"missing {purpose.name}")

    leaf_policy = ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, usage_present
    )
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except PathError as exc:
        detail = str(exc).removeprefix("validation failed: ")
        raise VerificationError(
            f"certificate {describe(leaf)!r} does not chain to a trusted root at "
            f"{at.isoformat()} ({detail})"
        ) from None
