"""Detached CMS SignedData with CAdES-BES signed attributes, built around a remote signature.

The signed attributes are assembled here, their DER (as a SET OF, sorted as DER demands)
is what the HSM/KMS signs, and the result verifies with `openssl cms -verify`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core, parser, tsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization

from signer.algorithms import KeyKind, SignatureScheme

_SIGNATURE_ALGORITHM = {
    (KeyKind.EC_P256, "sha256"): "sha256_ecdsa",
    (KeyKind.EC_P384, "sha384"): "sha384_ecdsa",
}


# DER building blocks for the per-artifact parts, which are spliced into a batch template
# with asn1crypto's own TLV encoder (asn1crypto re-encodes whole trees, which is slow).
_UNIVERSAL, _CONTEXT = 0, 2
_PRIMITIVE, _CONSTRUCTED = 0, 1
_OCTET_STRING, _SEQUENCE, _SET = 4, 16, 17
_EMPTY_SET = b"\x31\x00"
_SIGNED_DATA_OID = cms.ContentType("signed_data").dump()
_SIGNING_CERTIFICATE_V2_OID = cms.CMSAttributeType("signing_certificate_v2").dump()
_CONTENT_TYPE_DATA = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()


def _sequence(contents: bytes) -> bytes:
    return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, _SEQUENCE, contents))


def _set(contents: bytes) -> bytes:
    return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, _SET, contents))


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


@dataclass(frozen=True)
class _BatchParts:
    """The DER parts of a batch that depend only on the scheme, the certificate and the chain."""

    signing_certificate_v2: bytes
    signer_info_head: bytes
    signature_algorithm: bytes
    signed_data_head: bytes


@functools.lru_cache(maxsize=64)
def _batch_parts(
    scheme: SignatureScheme, cert_der: bytes, chain_der: tuple[bytes, ...]
) -> _BatchParts:
    """Encoded once per certificate, not once per batch: asn1crypto takes milliseconds here, and
    a signing service builds a batch per request."""
    signer_cert = x509.Certificate.load(cert_der)
    ess_cert_id = tsp.ESSCertIDv2(
        {
            # SHA-256 is the default hashAlgorithm of ESSCertIDv2, so DER omits it.
            "cert_hash": hashlib.sha256(cert_der).digest(),
            "issuer_serial": {
                "issuer": [x509.GeneralName({"directory_name": signer_cert.issuer})],
                "serial_number": signer_cert.serial_number,
            },
        }
    )
    digest_algorithm = algos.DigestAlgorithm({"algorithm": scheme.hash_name})
    sid = cms.SignerIdentifier(
        {
            "issuer_and_serial_number": {
                "issuer": signer_cert.issuer,
                "serial_number": signer_cert.serial_number,
            }
        }
    )
    certificates = [signer_cert, *(x509.Certificate.load(c) for c in chain_der if c != cert_der)]
    template = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [digest_algorithm],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cms.CertificateChoices({"certificate": c}) for c in certificates],
            "signer_infos": [],
        }
    )
    contents = parser.parse(template.dump())[4]
    if not contents.endswith(_EMPTY_SET):
        raise AssertionError("SignedData template does not end with its SignerInfos")
    return _BatchParts(
        # Spliced by hand: asn1crypto re-encodes the whole tree here (~17 ms); the bytes are
        # the same: SEQUENCE { type, SET { SigningCertificateV2 { certs } } }.
        signing_certificate_v2=_sequence(
            _SIGNING_CERTIFICATE_V2_OID + _set(_sequence(_sequence(ess_cert_id.dump())))
        ),
        # version v1, sid, digestAlgorithm
        signer_info_head=core.Integer(1).dump() + sid.dump() + digest_algorithm.dump(),
        signature_algorithm=signature_algorithm(scheme).dump(),
        #: Everything of the SignedData before its SignerInfos: the same for the whole batch.
        signed_data_head=contents[: -len(_EMPTY_SET)],
    )


class CadesBesBuilder:
    """Builds the SignedData of one batch: everything but the message digest and the signature
    is the same for every artifact, so it is encoded once and the rest spliced in."""

    def __init__(
        self,
        scheme: SignatureScheme,
        signer_cert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        signing_time: dt.datetime,
    ) -> None:
        self.scheme = scheme
        self._signer_cert = signer_cert
        parts = _batch_parts(scheme, signer_cert.dump(), tuple(c.dump() for c in chain))
        self._fixed_attributes = [
            _CONTENT_TYPE_DATA,
            cms.CMSAttribute(
                {"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]}
            ).dump(),
            parts.signing_certificate_v2,
        ]
        self._signer_info_head = parts.signer_info_head
        self._signature_algorithm = parts.signature_algorithm
        self._signed_data_head = parts.signed_data_head

    def signed_attributes(self, message_digest: bytes) -> bytes:
        """DER of the SET OF signed attributes, members sorted as DER demands: what gets signed."""
        digest_attribute = cms.CMSAttribute(
            {"type": "message_digest", "values": [message_digest]}
        ).dump()
        members = sorted([*self._fixed_attributes, digest_attribute])
        return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, _SET, b"".join(members)))

    def signer_info(
        self, signed_attributes: bytes, signature: bytes, unsigned_attributes: bytes = b""
    ) -> bytes:
        """DER SignerInfo; `unsigned_attributes` is the contents of its [1] SET, if any."""
        attributes_contents = parser.parse(signed_attributes)[4]
        parts = [
            self._signer_info_head,
            parser.emit(_CONTEXT, _CONSTRUCTED, 0, attributes_contents),  # [0] IMPLICIT SET
            self._signature_algorithm,
            parser.emit(_UNIVERSAL, _PRIMITIVE, _OCTET_STRING, signature),
        ]
        if unsigned_attributes:
            parts.append(parser.emit(_CONTEXT, _CONSTRUCTED, 1, unsigned_attributes))
        return bytes(parser.emit(_UNIVERSAL, _CONSTRUCTED, _SEQUENCE, b"".join(parts)))

    def signed_data(
        self, signed_attributes: bytes, signature: bytes, unsigned_attributes: bytes = b""
    ) -> bytes:
        """The DER ContentInfo of a detached SignedData with one SignerInfo."""
        signer_info = self.signer_info(signed_attributes, signature, unsigned_attributes)
        signer_infos = parser.emit(_UNIVERSAL, _CONSTRUCTED, _SET, signer_info)
        content = parser.emit(
            _UNIVERSAL, _CONSTRUCTED, _SEQUENCE, self._signed_data_head + signer_infos
        )
        return bytes(
            parser.emit(
                _UNIVERSAL,
                _CONSTRUCTED,
                _SEQUENCE,
                _SIGNED_DATA_OID + parser.emit(_CONTEXT, _CONSTRUCTED, 0, content),  # [0] EXPLICIT
            )
        )


def add_unsigned_attribute(der: bytes, attribute: bytes) -> bytes:
    """The ContentInfo `der` with one more unsigned attribute on its SignerInfo.

    Only the unsigned attributes are re-encoded; the signed attributes keep their bytes.
    """
    info = cms.ContentInfo.load(der)
    signer_info = info["content"]["signer_infos"][0]
    existing = signer_info["unsigned_attrs"]
    members = [] if existing.native is None else [bytes(a.dump()) for a in existing]
    members = sorted([*members, attribute])  # a DER SET OF is sorted
    signer_info["unsigned_attrs"] = cms.CMSAttributes([cms.CMSAttribute.load(m) for m in members])
    return bytes(info.dump())


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
