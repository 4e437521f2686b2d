"""Certificate paths: a leaf up to a trust root, at a given moment, for one extended key usage.

Path building and the X.509 rules come from cryptography's verifier, with the CA/Browser Forum
code-signing profile for intermediates plugged into its CA policy; in front of it, the common
failures (expired, wrong usage) are checked one by one, and behind it a failed path is walked
again so that the user reads which certificate broke it and why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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
    Problem,
    Purpose,
    ca_usage_problem,
    describe,
    leaf_problem,
    load_certificates,
    usage_problem,
    utc_text,
    validity_problem,
)
from signer.errors import ConfigError, VerificationError

#: Longer chains than this are not built (cryptography's default is 8 as well).
MAX_DEPTH = 8


def load_trust_roots(path: Path, what: str) -> list[x509.Certificate]:
    roots = load_certificates(path, what)
    for root in roots:
        if not _is_ca(root):
            raise ConfigError(
                f"{what} {path}: {describe(root)!r} is not a CA certificate", code="not-a-ca"
            )
    return roots


def load_untrusted(path: Path, what: str) -> list[x509.Certificate]:
    """Intermediates and leaves offered for path building: they confer no trust."""
    return load_certificates(path, what)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_usage(cert: x509.Certificate, purpose: Purpose) -> None:
    """The leaf's extended key usage, with the reason spelled out when it is wrong."""
    problem = leaf_problem(cert, purpose) or usage_problem(cert, purpose)
    if problem:
        raise VerificationError(problem, code=problem.code)


def check_validity(cert: x509.Certificate, at: dt.datetime, role: str = "certificate") -> None:
    problem = validity_problem(cert, at, role)
    if problem:
        raise VerificationError(problem, code=problem.code)


def _policies(purpose: Purpose) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, leaf policy): web PKI rules for CAs, but EKU nested the code-signing way."""

    def ca_usage(_policy: object, cert: x509.Certificate, ext: object) -> None:
        problem = ca_usage_problem(cert, purpose) if ext is not None else None
        if problem:
            raise ValueError(problem)

    def leaf_usage(_policy: object, _cert: x509.Certificate, ext: object) -> None:
        if not isinstance(ext, x509.ExtendedKeyUsage) or purpose.oid not in ext:
            raise ValueError(f"missing {purpose.name}")

    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, ca_usage
    )
    leaf_policy = ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, leaf_usage
    )
    return ca_policy, leaf_policy


def validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    purpose: Purpose,
    roots_name: str = "the trust roots",
    roots_field: str | None = None,
) -> list[x509.Certificate]:
    """The validated chain from `leaf` to one of `roots` at `at`; VerificationError otherwise.

    `roots_name` says in words which roots these are ("the trust roots", "the TSA roots");
    `roots_field` is the input they came from, for the caller to name (`trust_roots`).
    """
    roots_name, field = _roots_words(roots_name, roots_field)
    check_usage(leaf, purpose)
    check_validity(leaf, at)
    ca_policy, leaf_policy = _policies(purpose)
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(at)
        .max_chain_depth(MAX_DEPTH)
        .extension_policies(ca_policy=ca_policy, ee_policy=leaf_policy)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except PathError as exc:
        try:
            reason = explain(
                leaf, intermediates, roots, at=at, purpose=purpose, roots_name=roots_name
            )
        except _UNREADABLE:  # a garbled certificate in the bag: the verifier's reason stands
            reason = None
        if reason is None:
            reason = Problem(
                f"no chain from {describe(leaf)!r} to a trusted root at "
                f"{utc_text(at)}: "
                f"{_detail(str(exc))}",
                code="untrusted-chain",
            )
        raise VerificationError(reason, code=reason.code, field=field) from None


_ROOT_FIELDS = {"the trust roots": "trust_roots", "the TSA roots": "tsa_roots"}


def _roots_words(name: str, field: str | None) -> tuple[str, str | None]:
    """("the TSA roots", "tsa_roots") also for a caller that still passes a flag name:
    library messages speak of inputs in words, the CLI adds the flag."""
    if not name.startswith("--"):
        return name, field or _ROOT_FIELDS.get(name)
    dest = name[2:].replace("-", "_")
    words = {"trust_roots": "the trust roots", "tsa_roots": "the TSA roots"}
    return words.get(dest, "the " + dest.replace("_", " ")), field or dest


#: What cryptography raises for a certificate it loaded but cannot read a part of.
_UNREADABLE = (ValueError, KeyError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension)

#: The path builder's own wording, and what it means to the person holding the certificates.
_VERIFIER_WORDS = (
    ("exceeds max depth", f"the chain would be longer than {MAX_DEPTH} certificates"),
    ("depth calculation overflowed", f"the chain would be longer than {MAX_DEPTH} certificates"),
    (
        "all candidates exhausted with no interior errors",
        "no issuer certificate in the signature or among the roots leads to a trusted root",
    ),
    ("path length constraint", "a CA's pathLenConstraint does not allow a chain this long"),
    ("name constraint", "a name of the certificate is outside a CA's nameConstraints"),
    ("RSA key is too weak", "a certificate in the chain has an RSA key under 2048 bits"),
    ("not valid at validation time", "a certificate in the chain was not valid at that time"),
    ("signature does not match", "a certificate's signature does not verify with its issuer's key"),
    (
        "basicConstraints.cA must be asserted",
        "an issuer in the chain is not a CA certificate (basicConstraints)",
    ),
    ("has no basicConstraints", "an issuer in the chain has no basicConstraints"),
)


def _detail(raw: str) -> str:
    """The verifier's reason in words: its framing ("validation failed: candidates exhausted:")
    and its phrases never reach the user, a validator's own message does."""
    text = raw.removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    marker = "Python extension validator failed: ValueError: "
    if marker in text:
        return text.split(marker, 1)[1]
    for phrase, words in _VERIFIER_WORDS:
        if phrase in text:
            return words
    return f"the X.509 path rules refuse it ({text})"


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def explain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    purpose: Purpose,
    roots_name: str,
) -> Problem | None:
    """Why no path leads from `leaf` to a root, walking issuers the way a person would; None
    when the walk finds no single culprit (the verifier's own reason is shown then)."""
    current, via = leaf, 0
    seen_der: set[bytes] = {leaf.tbs_certificate_bytes}
    while via < MAX_DEPTH:
        anchors = [root for root in roots if _issued_by(current, root)]
        if anchors:
            problems = [_root_problem(root, at, purpose) for root in anchors]
            if all(problems):
                first = next(problem for problem in problems if problem is not None)
                return Problem(
                    f"no chain from {describe(leaf)!r} to a trusted root: {first}", code=first.code
                )
            break  # a usable root is reached: the verifier's own reason is the precise one
        parents = [
            c
            for c in intermediates
            if c.tbs_certificate_bytes not in seen_der and _issued_by(current, c)
        ]
        if not parents:
            path = "" if current is leaf else f" (through {describe(current)!r})"
            if any(root.subject == current.issuer for root in roots):
                return Problem(
                    f"no chain from {describe(leaf)!r} to a trusted root{path}: issuer "
                    f"{current.issuer.rfc4514_string()!r} has the name of a certificate among "
                    f"{roots_name}, but its signature does not verify with that one's key",
                    code="untrusted-chain",
                )
            return Problem(
                f"no chain from {describe(leaf)!r} to a trusted root{path}: issuer "
                f"{current.issuer.rfc4514_string()!r} is not among {roots_name}",
                code="untrusted-chain",
            )
        problems = [_ca_problem(parent, at, purpose) for parent in parents]
        usable = [p for p, problem in zip(parents, problems, strict=True) if problem is None]
        if not usable:
            first = next(problem for problem in problems if problem is not None)
            return Problem(
                f"no chain from {describe(leaf)!r} to a trusted root: {first}", code=first.code
            )
        current = usable[0]
        seen_der.add(current.tbs_certificate_bytes)
        via += 1
    else:
        return Problem(
            f"no chain from {describe(leaf)!r} to a trusted root within {MAX_DEPTH} certificates",
            code="untrusted-chain",
        )
    return None


def _root_problem(cert: x509.Certificate, at: dt.datetime, purpose: Purpose) -> Problem | None:
    return validity_problem(cert, at, "trust root") or ca_usage_problem(cert, purpose)


def _ca_problem(cert: x509.Certificate, at: dt.datetime, purpose: Purpose) -> Problem | None:
    if not _is_ca(cert):
        return Problem(
            f"issuer {describe(cert)!r} is not a CA certificate (basicConstraints)",
            code="untrusted-chain",
        )
    return validity_problem(cert, at, "intermediate CA") or ca_usage_problem(cert, purpose)
