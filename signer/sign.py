"""Sign a batch of artifacts: hash them in parallel, sign every digest through one open key,
check each signature, and let the `.p7s` files appear only when all of them succeeded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from signer import cms, cmsverify
from signer.algorithms import HashName, RsaPadding, SignatureScheme, scheme_for
from signer.atomic import write_all
from signer.certificates import check_signer_certificate, fingerprint
from signer.digest import ArtifactDigest, ProgressCallback, check_artifact, digest_file
from signer.errors import ConfigError, VerificationError
from signer.files import SIGNATURE_LIMIT, read_capped
from signer.keys.base import RemoteKey
from signer.timestamp import TimestampClient, TimestampToken, TsaSettings, token_attribute

SIGNATURE_SUFFIX = ".p7s"


@dataclass(frozen=True)
class SignOptions:
    """What a `sign` call needs besides the key and the artifacts."""

    cert: x509.Certificate | None = None
    chain: Sequence[x509.Certificate] = ()
    out_dir: Path | None = None
    rsa_digest: HashName = "sha256"
    rsa_padding: RsaPadding = "pkcs1v15"
    cert_source: str = "--cert"
    tsa: TsaSettings | None = None


@dataclass(frozen=True)
class SignedArtifact:
    """What was signed, for the report and `--json`."""

    artifact: Path
    signature: Path
    size: int
    hash_name: str
    digest_hex: str
    key: str
    scheme: str
    certificate_fingerprint: str
    certificate_subject: str
    timestamp: TimestampToken | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "path": str(self.artifact),
            "size": self.size,
            "digest": {"algorithm": self.hash_name, "value": self.digest_hex},
            "key": self.key,
            "signature_algorithm": self.scheme,
            "certificate": {
                "sha256_fingerprint": self.certificate_fingerprint,
                "subject": self.certificate_subject,
            },
            "output": str(self.signature),
            "timestamp": None if self.timestamp is None else self.timestamp.as_json(),
        }


def signature_path(artifact: Path, out_dir: Path | None) -> Path:
    return (out_dir or artifact.parent) / (artifact.name + SIGNATURE_SUFFIX)


def plan_outputs(artifacts: Sequence[Path], out_dir: Path | None) -> list[Path]:
    """Check every artifact and its output path before any work; two artifacts may not share one."""
    if not artifacts:
        raise ConfigError("no artifacts to sign")
    outputs: dict[Path, Path] = {}
    for artifact in artifacts:
        check_artifact(artifact)
        target = signature_path(artifact, out_dir).absolute()
        if target in outputs:
            raise ConfigError(
                f"{artifact}: its signature {target} would overwrite that of {outputs[target]}",
                hint="sign artifacts with the same name into different --out-dir",
            )
        if target.is_dir():
            raise ConfigError(f"{artifact}: its signature path {target} is a directory")
        outputs[target] = artifact
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir}: is not a directory")
    return [signature_path(a, out_dir) for a in artifacts]


def resolve_certificate(key: RemoteKey, options: SignOptions) -> tuple[x509.Certificate, str]:
    """The signer certificate: `--cert`, else the one stored with the key on the token."""
    if options.cert is not None:
        return options.cert, options.cert_source
    cert = key.certificate()
    if cert is None:
        raise ConfigError(
            f"{key.display_uri}: no certificate given and none stored with the key",
            hint="pass --cert CERT.pem",
        )
    return cert, f"certificate on {key.display_uri}"


def hash_all(
    artifacts: Sequence[Path], hash_name: str, progress: ProgressCallback | None
) -> list[ArtifactDigest]:
    """Digest the artifacts on all cores (hashlib releases the GIL while it hashes)."""
    if len(artifacts) == 1:
        return [digest_file(artifacts[0], hash_name, progress)]
    workers = min(len(artifacts), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda path: digest_file(path, hash_name, progress), artifacts))


def sign_artifacts(
    key: RemoteKey,
    artifacts: Sequence[Path],
    options: SignOptions,
    *,
    progress: ProgressCallback | None = None,
) -> list[SignedArtifact]:
    """Sign every artifact with `key`, writing `ARTIFACT.p7s` for each, all or nothing."""
    outputs = plan_outputs(artifacts, options.out_dir)
    public_key = key.public_key()
    scheme: SignatureScheme = scheme_for(
        public_key, rsa_digest=options.rsa_digest, rsa_padding=options.rsa_padding
    )
    cert, cert_source = resolve_certificate(key, options)
    check_signer_certificate(cert, public_key, where=cert_source, key_name=key.display_uri)
    signer_cert = cms.to_asn1(cert)
    chain = [cms.to_asn1(c) for c in options.chain]

    digests = hash_all(artifacts, scheme.hash_name, progress)
    builder = cms.CadesBesBuilder(scheme, signer_cert, chain, cms.utc_now())
    payloads = [builder.signed_attributes(d.digest) for d in digests]
    signatures = key.sign_many(payloads, scheme)
    for payload, signature in zip(payloads, signatures, strict=True):
        key.check_signature(signature, payload, scheme)

    tokens: list[TimestampToken | None] = [None] * len(signatures)
    if options.tsa is not None:
        with TimestampClient(options.tsa) as client:
            tokens = list(client.stamp_many([(sig, scheme.hash_name) for sig in signatures]))

    write_all(
        (target, builder.signed_data(payload, signature, token_attribute(token) if token else b""))
        for payload, signature, token, target in zip(
            payloads, signatures, tokens, outputs, strict=True
        )
    )

    cert_fp = fingerprint(cert)
    subject = cert.subject.rfc4514_string()
    return [
        SignedArtifact(
            artifact=d.path,
            signature=out,
            size=d.size,
            hash_name=d.hash_name,
            digest_hex=d.digest.hex(),
            key=key.display_uri,
            scheme=scheme.describe(),
            certificate_fingerprint=cert_fp,
            certificate_subject=subject,
            timestamp=token,
        )
        for d, out, token in zip(digests, outputs, tokens, strict=True)
    ]


def timestamp_signatures(
    signatures: Sequence[Path], settings: TsaSettings
) -> list[tuple[Path, TimestampToken]]:
    """Add an RFC 3161 token to existing `.p7s` files (sign in one zone, timestamp later).

    The signed attributes keep their exact bytes, so the signature stays valid; all files
    are rewritten together or not at all.
    """
    messages = []
    for path in signatures:
        der = read_capped(path, what="signature", limit=SIGNATURE_LIMIT)
        try:
            messages.append((der, cmsverify.parse_signed_data(der, str(path))))
        except VerificationError as exc:
            raise ConfigError(f"{exc.message}; not a signature that can be timestamped") from None
    with TimestampClient(settings) as client:
        tokens = client.stamp_many([(m.signature, m.digest_name) for _, m in messages])
    write_all(
        (path, cms.add_unsigned_attribute(der, token_attribute(token)))
        for path, (der, _), token in zip(signatures, messages, tokens, strict=True)
    )
    return list(zip(signatures, tokens, strict=True))
