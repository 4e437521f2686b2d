"""PKCS#10 certificate requests signed by the HSM/KMS key, to take to the organisation's CA.

cryptography's CSR builder needs a private key object; ours lives in the HSM, so the
request is assembled with asn1crypto and only its to-be-signed bytes go to the backend.
"""

from __future__ import annotations

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
        raise ConfigError(f"--subject {subject!r}: not an RFC 4514 name ({exc})") from None
    if not len(name):
        raise ConfigError("--subject is empty")
    return name


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
