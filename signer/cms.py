"""Detached CMS SignedData with CAdES-BES signed attributes, built around a remote signature.

The signed attributes are assembled here, their DER (as a SET OF, sorted as DER demands)
is what the HSM/KMS signs, and the result verifies with `openssl cms -verify`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from asn1crypto import algos, cms, tsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization

from signer.algorithms import KeyKind, SignatureScheme

_SIGNATURE_ALGORITHM = {
    (KeyKind.EC_P256, "sha256"): "sha256_ecdsa",
    (KeyKind.EC_P384, "sha384"): "sha384_ecdsa",
}


def to_asn1(cert: cx509.Certificate) -> x509.Certificate:
    return x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def signature_algorithm(scheme: SignatureScheme) -> cms.SignedDigestAlgorithm:
    """How the SignerInfo names the signature: ECDSA-with-SHA*, RSA, RSASSA-PSS or Ed25519."""
    if scheme.kind is KeyKind.ED25519:
        return cms.SignedDigestAlgorithm({"algorithm": "ed25519"})
    if scheme.kind is KeyKind.RSA and scheme.rsa_padding == "pss":
        hash_alg = algos.DigestAlgorithm({"algorithm": scheme.hash_name})
        params = algos.RSASSAPSSParams(
            {
                "hash_algorithm": hash_alg,
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": hash_alg},
                "salt_length": scheme.digest_size,
                "trailer_field": "trailer_field_bc",
            }
        )
        return cms.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": params})
    if scheme.kind is KeyKind.RSA:
        return cms.SignedDigestAlgorithm({"algorithm": f"{scheme.hash_name}_rsa"})
    name = _SIGNATURE_ALGORITHM.get((scheme.kind, scheme.hash_name), f"{scheme.hash_name}_ecdsa")
    return cms.SignedDigestAlgorithm({"algorithm": name})


class CadesBesBuilder:
    """Builds the SignedData of one batch: everything but the message digest and the signature
    is the same for every artifact, so it is encoded once (asn1crypto re-encoding is slow)."""

    def __init__(
        self,
        scheme: SignatureScheme,
        signer_cert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        signing_time: dt.datetime,
    ) -> None:
        self.scheme = scheme
        self._signer_cert = signer_cert
        ess_cert_id = tsp.ESSCertIDv2(
            {
                # SHA-256 is the default hashAlgorithm of ESSCertIDv2, so DER omits it.
                "cert_hash": hashlib.sha256(signer_cert.dump()).digest(),
                "issuer_serial": {
                    "issuer": [x509.GeneralName({"directory_name": signer_cert.issuer})],
                    "serial_number": signer_cert.serial_number,
                },
            }
        )
        self._fixed_attributes = [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump(),
            cms.CMSAttribute(
                {"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]}
            ).dump(),
            cms.CMSAttribute(
                {"type": "signing_certificate_v2", "values": [{"certs": [ess_cert_id]}]}
            ).dump(),
        ]
        self._digest_algorithm = algos.DigestAlgorithm({"algorithm": scheme.hash_name})
        self._signature_algorithm = signature_algorithm(scheme)
        self._sid = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": signer_cert.issuer,
                    "serial_number": signer_cert.serial_number,
                }
            }
        )
        certificates = [signer_cert, *(c for c in chain if c.dump() != signer_cert.dump())]
        self._certificates = cms.CertificateSet(
            [cms.CertificateChoices({"certificate": c}) for c in certificates]
        )

    def signed_attributes(self, message_digest: bytes) -> bytes:
        """DER of the SET OF signed attributes, members sorted as DER demands: what gets signed."""
        digest_attribute = cms.CMSAttribute(
            {"type": "message_digest", "values": [message_digest]}
        ).dump()
        members = sorted([*self._fixed_attributes, digest_attribute])
        return bytes(cms.CMSAttributes([cms.CMSAttribute.load(m) for m in members]).dump())

    def signed_data(self, signed_attributes: bytes, signature: bytes) -> bytes:
        """The DER ContentInfo of a detached SignedData with one SignerInfo."""
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": self._sid,
                "digest_algorithm": self._digest_algorithm,
                "signed_attrs": cms.CMSAttributes.load(signed_attributes),
                "signature_algorithm": self._signature_algorithm,
                "signature": signature,
            }
        )
        content = cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [self._digest_algorithm],
                "encap_content_info": {"content_type": "data"},
                "certificates": self._certificates,
                "signer_infos": [signer_info],
            }
        )
        return bytes(cms.ContentInfo({"content_type": "signed_data", "content": content}).dump())


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
