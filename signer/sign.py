"""Sign a batch of artifacts: hash them in parallel, sign every digest through one open key,
check each signature, and let the `.p7s` files appear only when all of them succeeded."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from signer import cms
from signer.algorithms import HashName, RsaPadding, SignatureScheme, scheme_for
from signer.certificates import check_signer_certificate, fingerprint
from signer.digest import ArtifactDigest, ProgressCallback, check_artifact, digest_file
from signer.errors import ConfigError
from signer.keys.base import RemoteKey

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


@dataclass
class _StagedOutputs:
    """Temporary files beside their final names; renamed only when the whole batch succeeded."""

    staged: list[tuple[Path, Path]] = field(default_factory=list)

    def write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        temp = Path(temp_name)
        self.staged.append((temp, target))
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())

    def commit(self) -> None:
        done: list[Path] = []
        try:
            for temp, target in self.staged:
                os.replace(temp, target)
                done.append(target)
        except OSError:
            for target in done:  # all or nothing, even when a rename fails half way
                target.unlink(missing_ok=True)
            raise
        self.staged.clear()

    def discard(self) -> None:
        for temp, _ in self.staged:
            temp.unlink(missing_ok=True)
        self.staged.clear()


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

    staged = _StagedOutputs()
    try:
        for payload, signature, target in zip(payloads, signatures, outputs, strict=True):
            staged.write(target, builder.signed_data(payload, signature))
        staged.commit()
    except OSError as exc:
        raise ConfigError(
            f"{exc.filename or 'output'}: cannot write signature ({exc.strerror}); nothing was written"
        ) from None
    finally:
        staged.discard()

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
        )
        for d, out in zip(digests, outputs, strict=True)
    ]
