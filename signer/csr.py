"""PKCS#10 certificate requests signed by the HSM/KMS key, to take to the organisation's CA.

cryptography's CSR builder needs a private key object; ours lives in the HSM, so the
request is assembled with asn1crypto and only its to-be-signed bytes go to the backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from asn1crypto import csr, keys, x509
from cryptography import x509 as cx509

from signer.algorithms import RsaPadding, scheme_for
from signer.cms import signature_algorithm
from signer.errors import ConfigError
from signer.keys.base import RemoteKey


def parse_subject(subject: str) -> cx509.Name:
    """An RFC 4514 name such as "CN=Release signing,O=Example"."""
    try:
        name = cx509.Name.from_rfc4514_string(subject)
    except ValueError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"subject {subject!r} is not an RFC 4514 name" + (f" ({detail})" if detail else ""),
            hint='write it as "CN=Release signing,O=Example"',
            code="bad-subject",
            field="subject",
        ) from None
    if not len(name):
        raise ConfigError(
            "the subject is empty",
            hint='give one such as "CN=Release signing,O=Example"',
            code="bad-subject",
            field="subject",
        )
    return name


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: RFC 5322 atext: what a dot-atom local part may hold (no quoted strings, no comments).
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


def dns_problem(name: str) -> str | None:
    """Why `name` is not a DNS host name (RFC 1123 labels, ASCII, no trailing dot); None if it is."""
    if not name:
        return "it is empty"
    if not name.isascii():
        return "it is not ASCII (write an internationalised name in its xn-- form)"
    if len(name) > 253:
        return f"it is {len(name)} characters, more than 253"
    labels = name.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            return f"label {label!r} is not 1 to 63 letters, digits and inner hyphens"
    if labels[-1].isdigit():
        return "its last label is a number (an IP address is not a DNS name)"
    return None


def email_problem(address: str) -> str | None:
    """Why `address` is not a plain addr-spec (local@domain, dot-atom local part); None if it is."""
    if address.count("@") != 1:
        return "it needs exactly one @"
    local, domain = address.split("@")
    if not local:
        return "the part before @ is empty"
    if not domain:
        return "the part after @ is empty"
    if len(local) > 64:
        return f"the part before @ is {len(local)} characters, more than 64"
    if not all(_ATEXT.fullmatch(atom) for atom in local.split(".")):
        return (
            "the part before @ holds spaces, controls, quotes or misplaced dots"
            if local.isascii()
            else "the part before @ is not ASCII"
        )
    problem = dns_problem(domain)
    return None if problem is None else f"its domain {domain!r} is not a DNS name: {problem}"


def check_names(emails: Sequence[str], dns_names: Sequence[str]) -> None:
    """Refuse subjectAltName values a CA would reject (or, worse, accept as something else)."""
    for address in emails:
        problem = email_problem(address)
        if problem is not None:
            raise ConfigError(
                f"e-mail {address!r} is not an address: {problem}",
                hint="give it as name@example.com",
                code="bad-email",
                field="email",
            )
    for dns in dns_names:
        problem = dns_problem(dns)
        if problem is not None:
            raise ConfigError(
                f"DNS name {dns!r} is not a DNS name: {problem}",
                hint="give a host name such as build.example.com",
                code="bad-dns-name",
                field="dns",
            )


def build_csr(
    key: RemoteKey,
    subject: str,
    *,
    emails: list[str] | None = None,
    dns_names: list[str] | None = None,
    rsa_padding: RsaPadding = "pkcs1v15",
) -> bytes:
    """A DER CertificationRequest asking for a code-signing certificate for `key`."""
    name = parse_subject(subject)
    check_names(emails or [], dns_names or [])
    san: list[cx509.GeneralName] = [cx509.RFC822Name(e) for e in emails or []]
    san += [cx509.DNSName(d) for d in dns_names or []]
    extensions = [
        x509.Extension(
            {"extn_id": "extended_key_usage", "critical": False, "extn_value": ["code_signing"]}
        ),
        x509.Extension(
            {
                "extn_id": "key_usage",
                "critical": True,
                "extn_value": x509.KeyUsage({"digital_signature"}),
            }
        ),
    ]
    if san:
        san_der = cx509.SubjectAlternativeName(san).public_bytes()
        extensions.append(
            x509.Extension(
                {
                    "extn_id": "subject_alt_name",
                    "critical": False,
                    "extn_value": x509.GeneralNames.load(san_der),
                }
            )
        )
    info = csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": x509.Name.load(name.public_bytes()),
            "subject_pk_info": keys.PublicKeyInfo.load(key.public_key_der()),
            "attributes": [{"type": "extension_request", "values": [extensions]}],
        }
    )
    scheme = scheme_for(key.public_key(), rsa_padding=rsa_padding)
    tbs = bytes(info.dump())
    signature = key.sign(tbs, scheme)
    key.check_signature(signature, tbs, scheme)
    request = csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": signature_algorithm(scheme),
            "signature": signature,
        }
    )
    return bytes(request.dump())
