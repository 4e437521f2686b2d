"""Verifying one CMS SignerInfo: the checks shared by Sealgate's `.p7s` files and RFC 3161 tokens.

Every check raises VerificationError with its own reason; nothing here returns a bare False.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core, parser, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import (
    HASH_NAMES,
    KeyKind,
    RsaPadding,
    SignatureScheme,
    key_kind,
    max_pss_salt_length,
    verify_signature,
)
from signer.certificates import describe
from signer.errors import ConfigError, VerificationError

# Make sure asn1crypto knows the ESS attributes (it registers them when tsp is imported).
_ = tsp.SigningCertificateV2

TIMESTAMP_ATTRIBUTE = "signature_time_stamp_token"  # id-aa-signatureTimeStampToken (CAdES-T)
_ECDSA = {"sha256_ecdsa": "sha256", "sha384_ecdsa": "sha384", "sha512_ecdsa": "sha512"}
_RSA = {"sha256_rsa": "sha256", "sha384_rsa": "sha384", "sha512_rsa": "sha512"}


@dataclass(frozen=True)
class SignedMessage:
    """A parsed SignedData with the one SignerInfo Sealgate expects in it."""

    signed_data: cms.SignedData
    signer_info: cms.SignerInfo
    certificates: list[x509.Certificate]
    #: Exact received bytes, taken before any `.native` access: asn1crypto may re-encode
    #: parts it has decoded, and a signature covers the bytes as they were sent.
    signed_attrs_der: bytes
    econtent: bytes | None
    timestamp_tokens: list[bytes]

    @property
    def signature(self) -> bytes:
        return bytes(self.signer_info["signature"].native)

    @property
    def digest_name(self) -> str:
        return str(self.signer_info["digest_algorithm"]["algorithm"].native)


def parse_signed_data(der: bytes, where: str) -> SignedMessage:
    """Parse a DER ContentInfo holding SignedData with exactly one SignerInfo, or say why not."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise VerificationError(
                f"{where}: not a CMS SignedData ({info['content_type'].native})",
                code="malformed-signature",
            )
        signed_data = info["content"]
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            raise VerificationError(
                f"{where}: holds {len(signer_infos)} SignerInfos; exactly one is allowed",
                code="unsupported-signature",
            )
        signer_info = signer_infos[0]
        signed_attrs = signer_info["signed_attrs"]
        signed_attrs_der = b"" if isinstance(signed_attrs, core.Void) else signed_attrs.contents
        content = signed_data["encap_content_info"]["content"]
        econtent = None if isinstance(content, core.Void) else bytes(content.contents)
        unsigned = signer_info["unsigned_attrs"]
        tokens = [
            bytes(value.dump())
            for attribute in ([] if isinstance(unsigned, core.Void) else unsigned)
            if attribute["type"].native == TIMESTAMP_ATTRIBUTE
            for value in attribute["values"]
        ]
        _touch(signed_data)
        _check_unsigned_fields(signed_data, signer_info, where)
        certificates = [
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in signed_data["certificates"] or []
            if choice.name == "certificate"
        ]
    except VerificationError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, x509.InvalidVersion) as exc:
        raise VerificationError(
            f"{where}: malformed CMS signature ({_short(exc)})", code="malformed-signature"
        ) from None
    return SignedMessage(
        signed_data, signer_info, certificates, bytes(signed_attrs_der), econtent, tokens
    )


def _touch(signed_data: cms.SignedData) -> None:
    """Parse every part Sealgate reads, so truncation and garbage surface here as one error.

    Certificates are left to cryptography's strict parser: asn1crypto's `.native` on a whole
    token decodes them too and costs tens of milliseconds.
    """
    _ = signed_data["version"].native, signed_data["digest_algorithms"].native
    encap = signed_data["encap_content_info"]
    _ = encap["content_type"].native, encap["content"].contents
    for signer_info in signed_data["signer_infos"]:
        for name in ("version", "sid", "digest_algorithm", "signature_algorithm", "signature"):
            _ = signer_info[name].native
        for attribute in signer_info["signed_attrs"] or []:
            _ = attribute.native
        for attribute in signer_info["unsigned_attrs"] or []:
            _ = attribute["type"].native, attribute["values"].contents


def _check_unsigned_fields(
    signed_data: cms.SignedData, signer_info: cms.SignerInfo, where: str
) -> None:
    """RFC 5652's MUSTs for the fields no signature covers: the versions and digestAlgorithms.

    Nothing signs them, so without these checks a changed byte there would still verify.
    """
    sid_version = "v1" if signer_info["sid"].name == "issuer_and_serial_number" else "v3"
    if signer_info["version"].native != sid_version:
        raise VerificationError(
            f"{where}: SignerInfo version {signer_info['version'].native} does not fit its "
            f"signer identifier ({sid_version} expected, RFC 5652 section 5.3)",
            code="malformed-signature",
        )
    expected = _signed_data_version(signed_data, sid_version)
    if signed_data["version"].native != expected:
        raise VerificationError(
            f"{where}: SignedData version {signed_data['version'].native} is not the "
            f"{expected} RFC 5652 section 5.1 requires for its content",
            code="malformed-signature",
        )
    declared = {alg["algorithm"].dotted for alg in signed_data["digest_algorithms"]}
    if signer_info["digest_algorithm"]["algorithm"].dotted not in declared:
        raise VerificationError(
            f"{where}: the SignerInfo's digest algorithm "
            f"{signer_info['digest_algorithm']['algorithm'].native} is not among the "
            "SignedData's digestAlgorithms",
            code="malformed-signature",
        )


def _signed_data_version(signed_data: cms.SignedData, signer_version: str) -> str:
    """The SignedData version RFC 5652 section 5.1 assigns to this content."""
    certificates = [choice.name for choice in signed_data["certificates"] or []]
    crls = [choice.name for choice in signed_data["crls"] or []]
    if "other" in certificates or "other" in crls:
        return "v5"
    if "v2_attr_cert" in certificates:
        return "v4"
    if (
        "v1_attr_cert" in certificates
        or signer_version == "v3"
        or signed_data["encap_content_info"]["content_type"].native != "data"
    ):
        return "v3"
    return "v1"


#: A library reason longer than this is cut, visibly ("…"); shorter ones are shown whole.
SHORT_LIMIT = 400


def _short(exc: BaseException) -> str:
    """A library's reason on one line and whole: cut (at a word, marked "…") only when it is
    longer than SHORT_LIMIT, so a message never loses its end silently."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) <= SHORT_LIMIT:
        return text
    cut = text[:SHORT_LIMIT].rsplit(" ", 1)[0] or text[:SHORT_LIMIT]
    return cut.rstrip(",;:") + " …"


#: What cryptography raises for a certificate it loaded but cannot read a part of (it parses
#: names, keys and extensions lazily; an unknown string tag in a name is a KeyError).
#: What cryptography raises on a garbled certificate part it parses lazily (a name attribute
#: whose value type does not fit its OID is a TypeError).
_MALFORMED_CERTIFICATE = (
    ValueError, TypeError, KeyError, UnsupportedAlgorithm, x509.DuplicateExtension
)  # fmt: skip


def signer_certificate(
    message: SignedMessage, where: str, extra: Sequence[x509.Certificate] = ()
) -> x509.Certificate:
    """The certificate the SignerInfo names (issuer and serial, or subject key identifier)."""
    sid = message.signer_info["sid"]
    candidates = [*message.certificates, *extra]
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        for cert in candidates:
            try:  # cryptography parses names lazily: a garbled one fails here
                found = cert.serial_number == serial and cert.issuer.public_bytes() == issuer
            except _MALFORMED_CERTIFICATE:
                continue  # unreadable, so it cannot be the one the SignerInfo names
            if found:
                return _usable(cert, where)
    else:
        key_id = sid.chosen.native
        for cert in candidates:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except (x509.ExtensionNotFound, *_MALFORMED_CERTIFICATE):
                continue
            if ski.digest == key_id:
                return _usable(cert, where)
    raise VerificationError(
        f"{where}: the signer's certificate is not in the signature",
        code="signer-certificate-missing",
    )


def _usable(cert: x509.Certificate, where: str) -> x509.Certificate:
    """The signer's certificate, once every part the checks read has parsed."""
    try:
        _ = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        _ = cert.public_key(), cert.extensions
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc
    except _MALFORMED_CERTIFICATE as exc:
        raise VerificationError(
            f"{where}: the signer's certificate is malformed ({_short(exc)})",
            code="malformed-signature",
        ) from None
    return cert


def scheme_of(message: SignedMessage, public_key: PublicKeyTypes, where: str) -> SignatureScheme:
    """The signature scheme the SignerInfo declares, checked against the key and digest."""
    digest_name = message.digest_name
    if digest_name not in HASH_NAMES:
        raise VerificationError(
            f"{where}: digest algorithm {digest_name} is not accepted",
            code="algorithm-not-accepted",
        )
    algorithm = message.signer_info["signature_algorithm"]
    name = algorithm["algorithm"].native
    try:
        kind = key_kind(public_key)
    except ConfigError as exc:
        raise VerificationError(f"{where}: {exc.message}", code="algorithm-not-accepted") from None
    hash_name: str = digest_name
    padding: RsaPadding | None = None
    if name in _ECDSA or name == "ecdsa":
        hash_name = _ECDSA.get(name, digest_name)
        ok = kind in (KeyKind.EC_P256, KeyKind.EC_P384)
    elif name in _RSA or name == "rsassa_pkcs1v15":
        hash_name, padding = _RSA.get(name, digest_name), "pkcs1v15"
        ok = kind is KeyKind.RSA
    elif name == "rsassa_pss":
        hash_name, padding = _pss_hash(algorithm["parameters"], where), "pss"
        ok = kind is KeyKind.RSA and isinstance(public_key, rsa.RSAPublicKey)
        if ok and hash_name == digest_name:
            salt = _pss_salt(algorithm["parameters"], public_key, hash_name, where)  # type: ignore[arg-type]
            return SignatureScheme(kind, digest_name, padding, pss_salt_length=salt)
    elif name == "ed25519":
        ok = kind is KeyKind.ED25519
    else:
        raise VerificationError(
            f"{where}: signature algorithm {name} is not accepted", code="algorithm-not-accepted"
        )
    if not ok or hash_name != digest_name:
        raise VerificationError(
            f"{where}: signature algorithm {name} does not fit the {kind.value} key "
            f"and {digest_name} digest",
            code="malformed-signature",
        )
    return SignatureScheme(kind, digest_name, padding)


def _pss_hash(params: algos.RSASSAPSSParams, where: str) -> str:
    """The hash of RSASSA-PSS parameters, which MGF1 must use too (RFC 4055 section 3.1)."""
    if not isinstance(params, algos.RSASSAPSSParams):
        raise VerificationError(
            f"{where}: RSASSA-PSS without its parameters", code="malformed-signature"
        )
    hash_name = str(params["hash_algorithm"]["algorithm"].native)
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1" or mgf["parameters"]["algorithm"].native != hash_name:
        raise VerificationError(
            f"{where}: RSASSA-PSS mask generation is not MGF1 with {hash_name}",
            code="malformed-signature",
        )
    return hash_name


def _pss_salt(
    params: algos.RSASSAPSSParams, public_key: rsa.RSAPublicKey, hash_name: str, where: str
) -> int:
    """The declared salt length, if the key can hold it; the trailer field must be 1."""
    if params["trailer_field"].native not in ("trailer_field_bc", 1):
        raise VerificationError(
            f"{where}: RSASSA-PSS trailerField {params['trailer_field'].native} is not 1 "
            "(RFC 4055 section 3.1)",
            code="malformed-signature",
        )
    salt = int(params["salt_length"].native)
    longest = max_pss_salt_length(public_key, hash_name)
    if not 0 <= salt <= longest:
        raise VerificationError(
            f"{where}: RSASSA-PSS salt length {salt} does not fit a {public_key.key_size}-bit "
            f"key with {hash_name} (at most {longest})",
            code="malformed-signature",
        )
    return salt


def asn1_utc(value: object, field: str, where: str) -> dt.datetime:
    """An ASN.1 UTCTime or GeneralizedTime as an aware UTC datetime; a time without 'Z'
    (local, or with an offset, which DER forbids) or out of range is malformed."""
    chosen = value.chosen if isinstance(value, core.Choice) else value
    if not isinstance(chosen, core.UTCTime | core.GeneralizedTime):
        raise VerificationError(
            f"{where}: {field} is not an ASN.1 time", code="malformed-signature"
        )
    try:
        raw = bytes(chosen.contents)
        moment = chosen.native
    except (ValueError, TypeError, OverflowError) as exc:
        raise VerificationError(
            f"{where}: malformed {field} ({_short(exc)})", code="malformed-signature"
        ) from None
    text = raw.decode("ascii", "replace")
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None or not raw.endswith(b"Z"):
        raise VerificationError(
            f"{where}: malformed {field} {text!r}: a UTC time ending in 'Z' is required",
            code="malformed-signature",
        )
    return moment.astimezone(dt.UTC)


def signed_attributes(message: SignedMessage, where: str) -> dict[str, object]:
    attrs = message.signer_info["signed_attrs"]
    if not message.signed_attrs_der or not len(attrs):
        raise VerificationError(
            f"{where}: the SignerInfo has no signed attributes", code="malformed-signature"
        )
    found: dict[str, object] = {}
    for attribute in attrs:
        kind = attribute["type"].native
        if kind in found:
            raise VerificationError(
                f"{where}: signed attribute {kind} appears twice", code="malformed-signature"
            )
        values = attribute["values"]
        if len(values) != 1:
            raise VerificationError(
                f"{where}: signed attribute {kind} must have one value", code="malformed-signature"
            )
        found[kind] = values[0]
    return found


def verify_signer_info(
    message: SignedMessage,
    cert: x509.Certificate,
    *,
    content_digest: bytes,
    content_type: str,
    where: str,
) -> dict[str, object]:
    """Check content type, message digest and the signature over the signed attributes."""
    attrs = signed_attributes(message, where)
    declared_type = getattr(attrs.get("content_type"), "native", None)
    if declared_type != content_type:
        raise VerificationError(
            f"{where}: signed contentType is {declared_type}, expected {content_type}",
            code="malformed-signature",
        )
    digest_attribute = attrs.get("message_digest")
    if digest_attribute is None:
        raise VerificationError(
            f"{where}: the messageDigest attribute is missing", code="malformed-signature"
        )
    if getattr(digest_attribute, "native", None) != content_digest:
        raise VerificationError(
            f"{where}: digest mismatch: the content's {message.digest_name} is not the signed one",
            code="digest-mismatch",
        )
    scheme = scheme_of(message, cert.public_key(), where)
    # The signature covers the attributes as received, encoded as a SET OF (RFC 5652 §5.4).
    tbs = parser.emit(0, 1, 17, message.signed_attrs_der)
    try:
        verify_signature(cert.public_key(), message.signature, tbs, scheme)
    except InvalidSignature:
        raise VerificationError(
            f"{where}: the signature does not verify with the key of {describe(cert)!r}",
            code="bad-signature",
        ) from None
    return attrs


def check_signing_certificate(
    attrs: dict[str, object], cert: x509.Certificate, where: str, *, required: bool
) -> None:
    """ESS signingCertificate(V2): the signed attributes must name exactly this certificate."""
    der = cert.public_bytes(serialization.Encoding.DER)
    if "signing_certificate_v2" in attrs:
        ess = attrs["signing_certificate_v2"]["certs"][0]  # type: ignore[index]
        hash_name = ess["hash_algorithm"]["algorithm"].native
        if hash_name not in HASH_NAMES:
            raise VerificationError(
                f"{where}: ESSCertIDv2 uses unaccepted hash {hash_name}",
                code="algorithm-not-accepted",
            )
        expected = hashlib.new(hash_name, der).digest()
    elif "signing_certificate" in attrs:
        ess = attrs["signing_certificate"]["certs"][0]  # type: ignore[index]
        expected = hashlib.sha1(der, usedforsecurity=False).digest()
    elif required:
        raise VerificationError(
            f"{where}: no signingCertificate attribute binds the certificate",
            code="ess-binding-missing",
        )
    else:
        return
    if ess["cert_hash"].native != expected:
        raise VerificationError(
            f"{where}: the signing certificate attribute names another certificate than "
            f"{describe(cert)!r}",
            code="ess-binding-mismatch",
        )
    issuer_serial = ess["issuer_serial"]
    if (
        issuer_serial.native is not None
        and issuer_serial["serial_number"].native != cert.serial_number
    ):
        raise VerificationError(
            f"{where}: the signing certificate attribute names another serial",
            code="ess-binding-mismatch",
        )


def content_digest(algorithm: algos.DigestAlgorithm, data: bytes) -> bytes:
    name = algorithm["algorithm"].native
    if name not in HASH_NAMES:
        raise VerificationError(
            f"digest algorithm {name} is not accepted", code="algorithm-not-accepted"
        )
    return hashlib.new(name, data).digest()
