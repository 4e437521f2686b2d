"""The CMS builder's cached, hand-spliced parts are the bytes asn1crypto itself would encode."""

from __future__ import annotations

import hashlib

from asn1crypto import cms, tsp, x509
from cryptography.hazmat.primitives.asymmetric import ec

from sealgate.localpki import LocalCA
from signer.algorithms import KeyKind, SignatureScheme
from signer.cms import CadesBesBuilder, _batch_parts, to_asn1, utc_now


def _asn1crypto_signing_certificate_v2(cert: x509.Certificate) -> bytes:
    ess_cert_id = tsp.ESSCertIDv2(
        {
            "cert_hash": hashlib.sha256(cert.dump()).digest(),
            "issuer_serial": {
                "issuer": [x509.GeneralName({"directory_name": cert.issuer})],
                "serial_number": cert.serial_number,
            },
        }
    )
    return bytes(
        cms.CMSAttribute(
            {"type": "signing_certificate_v2", "values": [{"certs": [ess_cert_id]}]}
        ).dump()
    )


def test_the_spliced_signing_certificate_attribute_is_asn1crypto_s_encoding() -> None:
    ca = LocalCA(with_intermediate=True)
    for curve in (ec.SECP256R1(), ec.SECP384R1()):
        cert = to_asn1(ca.issue(ec.generate_private_key(curve).public_key()))
        chain = tuple(to_asn1(c).dump() for c in ca.chain())
        scheme = SignatureScheme(KeyKind.EC_P256, "sha256")
        parts = _batch_parts(scheme, cert.dump(), chain)
        assert parts.signing_certificate_v2 == _asn1crypto_signing_certificate_v2(cert)


def test_two_certificates_never_share_cached_parts() -> None:
    """The cache is keyed by the certificate's bytes: a rotated certificate gets its own."""
    ca = LocalCA()
    scheme = SignatureScheme(KeyKind.EC_P256, "sha256")
    first, second = (
        to_asn1(ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key())) for _ in range(2)
    )
    builders = [CadesBesBuilder(scheme, cert, [], utc_now()) for cert in (first, second)]
    attributes = [b.signed_attributes(bytes(32)) for b in builders]
    assert attributes[0] != attributes[1]
    assert hashlib.sha256(first.dump()).digest() in attributes[0]
    assert hashlib.sha256(second.dump()).digest() in attributes[1]
