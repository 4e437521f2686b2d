"""Sign a batch: `sign_digests()` signs precomputed digests (what the signing service calls);
`sign_artifacts()` hashes files in parallel, signs their digests through one open key, checks
each signature, and lets the `.p7s` files appear only when all of them succeeded."""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from signer import cms, cmsverify
from signer.algorithms import HASH_NAMES, HashName, RsaPadding, SignatureScheme, scheme_for
from signer.atomic import ensure_directory, write_all
from signer.certificates import check_signer_certificate, fingerprint
from signer.digest import ArtifactDigest, ProgressCallback, check_artifact, digest_file
from signer.errors import BackendUnavailableError, ConfigError, VerificationError
from signer.files import SIGNATURE_LIMIT, path_error, read_capped
from signer.keys.base import RemoteKey
from signer.timestamp import TimestampClient, TimestampToken, TsaSettings, token_attribute

SIGNATURE_SUFFIX = ".p7s"
#: A name is a label for reports (a path, usually): long enough for any path, not for a payload.
MAX_NAME = 4096
#: Unicode categories a name may not hold: controls, format (bidi overrides), line separators.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True)
class SignOptions:
    """What a `sign` call needs besides the key and the artifacts."""

    cert: x509.Certificate | None = None
    chain: Sequence[x509.Certificate] = ()
    out_dir: Path | None = None
    rsa_digest: HashName = "sha256"
    rsa_padding: RsaPadding = "pkcs1v15"
    #: How the certificate given is named in messages (its path, usually).
    cert_source: str = "the certificate given"
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
        raise ConfigError("no artifacts to sign", code="nothing-to-sign", field="artifacts")
    if out_dir is not None:
        ensure_directory(out_dir, create=False, field="out_dir")
    outputs: dict[Path, Path] = {}
    for artifact in artifacts:
        check_artifact(artifact)
        target = signature_path(artifact, out_dir).absolute()
        if target in outputs:
            raise ConfigError(
                f"{artifact}: its signature {target} would overwrite that of {outputs[target]}",
                hint="sign artifacts with the same name into different output directories",
                code="output-collision",
                field="out_dir",
            )
        check_output_path(target, artifact)
        outputs[target] = artifact
    return [signature_path(a, out_dir) for a in artifacts]


def _limit(directory: Path, name: str, default: int) -> int:
    """A path limit of the file system `directory` is on (or would be on, once created)."""
    for candidate in (directory, *directory.parents):
        try:
            return os.pathconf(candidate, name)
        except (OSError, ValueError):
            continue
    return default


def check_output_path(target: Path, artifact: Path) -> None:
    """Refuse, before anything is signed, an output the file system cannot hold."""
    name_bytes = len(os.fsencode(target.name))
    name_max = _limit(target.parent, "PC_NAME_MAX", 255)
    if name_bytes > name_max:
        raise ConfigError(
            f"{artifact}: its signature's file name is {name_bytes} bytes, more than the "
            f"{name_max} the file system allows (File name too long)",
            hint="shorten the artifact's name",
            code="path-error",
            field="artifacts",
        )
    path_bytes = len(os.fsencode(target))
    path_max = _limit(target.parent, "PC_PATH_MAX", 4096)
    if path_bytes >= path_max:
        raise ConfigError(
            f"{artifact}: its signature's path is {path_bytes} bytes, more than the "
            f"{path_max - 1} the system allows (File name too long)",
            code="path-error",
            field="out_dir",
        )
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise path_error(target, exc, "use it as the signature's path", field="out_dir") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{artifact}: its signature path {target} is a directory",
            code="path-error",
            field="out_dir",
        )


def resolve_certificate(key: RemoteKey, options: SignOptions) -> tuple[x509.Certificate, str]:
    """The signer certificate: the one given, else the one stored with the key on the token."""
    if options.cert is not None:
        return options.cert, options.cert_source
    cert = key.certificate()
    if cert is None:
        raise ConfigError(
            f"{key.display_uri}: no certificate given and none stored with the key",
            hint="give the signer certificate",
            code="no-certificate",
            field="cert",
        )
    return cert, f"certificate on {key.display_uri}"


def signing_scheme(key: RemoteKey, options: SignOptions) -> SignatureScheme:
    """The scheme `key` signs with under `options`: it fixes the digest algorithm of a batch."""
    return scheme_for(
        key.public_key(), rsa_digest=options.rsa_digest, rsa_padding=options.rsa_padding
    )


def hash_all(
    artifacts: Sequence[Path], hash_name: str, progress: ProgressCallback | None
) -> list[ArtifactDigest]:
    """Digest the artifacts on all cores (hashlib releases the GIL while it hashes)."""
    if len(artifacts) == 1:
        return [digest_file(artifacts[0], hash_name, progress)]
    workers = min(len(artifacts), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda path: digest_file(path, hash_name, progress), artifacts))


@dataclass(frozen=True)
class DigestToSign:
    """One item of a batch: a name for reports, and the digest of its content."""

    name: str
    hash_name: str
    digest: bytes


@dataclass(frozen=True)
class SignedDigest:
    """One signed item: its detached CMS SignedData (DER) and the token inside it, if any."""

    name: str
    hash_name: str
    digest: bytes
    cms_der: bytes
    timestamp: TimestampToken | None = None


@dataclass(frozen=True)
class SignedBatch:
    """What `sign_digests()` made, and with which key, scheme and certificate."""

    items: list[SignedDigest]
    key: str
    scheme: SignatureScheme
    certificate: x509.Certificate


def check_digests(items: Sequence[DigestToSign], scheme: SignatureScheme) -> None:
    """Refuse a batch the key cannot sign as given: the service passes these from the network."""
    if not items:
        raise ConfigError("no digests to sign", code="nothing-to-sign", field="digests")
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"digest {index + 1}"
        if not isinstance(item.name, str) or not item.name.strip():
            raise ConfigError(f"{where}: the name is empty", code="bad-name", field="name")
        if any(unicodedata.category(c) in _HIDDEN for c in item.name):
            # a newline forges a report line, U+202E turns "gpj.exe" into "exe.jpg"
            raise ConfigError(
                f"{where} {item.name!r}: the name holds control or formatting characters",
                code="bad-name",
                field="name",
            )
        if len(item.name) > MAX_NAME:
            raise ConfigError(
                f"{where} {item.name[:40]!r}...: the name is {len(item.name)} characters, more "
                f"than {MAX_NAME}",
                code="bad-name",
                field="name",
            )
        if item.name in seen:
            raise ConfigError(
                f"{where} {item.name!r}: the name is given twice", code="duplicate-name",
                field="name",
            )  # fmt: skip
        seen.add(item.name)
        where = f"{where} {item.name!r}"
        if item.hash_name not in HASH_NAMES:
            raise ConfigError(
                f"{where}: unknown digest algorithm {str(item.hash_name)[:40]!r}",
                hint=f"use one of {', '.join(HASH_NAMES)}",
                code="unknown-digest-algorithm",
                field="digest_algorithm",
            )
        if item.hash_name != scheme.hash_name:
            raise ConfigError(
                f"{where}: a {item.hash_name} digest, but the key signs {scheme.describe()}",
                hint=f"give the {scheme.hash_name} digest of the content",
                code="digest-algorithm-mismatch",
                field="digest_algorithm",
            )
        if not isinstance(item.digest, bytes):
            raise ConfigError(
                f"{where}: the digest is not bytes", code="bad-digest", field="digest"
            )
        if len(item.digest) != scheme.digest_size:
            raise ConfigError(
                f"{where}: a {item.hash_name} digest is {scheme.digest_size} bytes, "
                f"this one is {len(item.digest)}",
                code="digest-length",
                field="digest",
            )


def sign_digests(
    key: RemoteKey, items: Sequence[DigestToSign], options: SignOptions
) -> SignedBatch:
    """Sign precomputed digests with `key` (no file access): a CMS SignedData per item, each
    signature checked against the key, timestamped when `options.tsa` is set."""
    scheme = signing_scheme(key, options)
    check_digests(items, scheme)
    cert, cert_source = resolve_certificate(key, options)
    check_signer_certificate(cert, key.public_key(), where=cert_source, key_name=key.display_uri)
    signer_cert = cms.to_asn1(cert)
    chain = [cms.to_asn1(c) for c in options.chain]

    builder = cms.CadesBesBuilder(scheme, signer_cert, chain, cms.utc_now())
    payloads = [builder.signed_attributes(item.digest) for item in items]
    signatures = key.sign_many(payloads, scheme)
    if len(signatures) != len(payloads):
        raise BackendUnavailableError(
            f"{key.display_uri}: {len(signatures)} signatures for {len(payloads)} digests",
            code="backend-bad-answer",
        )
    for payload, signature in zip(payloads, signatures, strict=True):
        key.check_signature(signature, payload, scheme)

    tokens: list[TimestampToken | None] = [None] * len(signatures)
    if options.tsa is not None:
        with TimestampClient(options.tsa) as client:
            tokens = list(client.stamp_many([(sig, scheme.hash_name) for sig in signatures]))

    signed = [
        SignedDigest(
            name=item.name,
            hash_name=item.hash_name,
            digest=item.digest,
            cms_der=builder.signed_data(
                payload, signature, token_attribute(token) if token else b""
            ),
            timestamp=token,
        )
        for item, payload, signature, token in zip(items, payloads, signatures, tokens, strict=True)
    ]
    return SignedBatch(items=signed, key=key.display_uri, scheme=scheme, certificate=cert)


def sign_artifacts(
    key: RemoteKey,
    artifacts: Sequence[Path],
    options: SignOptions,
    *,
    progress: ProgressCallback | None = None,
) -> list[SignedArtifact]:
    """Sign every artifact with `key`, writing `ARTIFACT.p7s` for each, all or nothing."""
    outputs = plan_outputs(artifacts, options.out_dir)
    scheme = signing_scheme(key, options)
    digests = hash_all(artifacts, scheme.hash_name, progress)
    batch = sign_digests(
        key, [DigestToSign(str(d.path), d.hash_name, d.digest) for d in digests], options
    )
    if options.out_dir is not None:
        ensure_directory(options.out_dir, field="out_dir")
    write_all((target, item.cms_der) for target, item in zip(outputs, batch.items, strict=True))

    cert_fp = fingerprint(batch.certificate)
    subject = batch.certificate.subject.rfc4514_string()
    return [
        SignedArtifact(
            artifact=d.path,
            signature=out,
            size=d.size,
            hash_name=d.hash_name,
            digest_hex=d.digest.hex(),
            key=batch.key,
            scheme=batch.scheme.describe(),
            certificate_fingerprint=cert_fp,
            certificate_subject=subject,
            timestamp=item.timestamp,
        )
        for d, out, item in zip(digests, outputs, batch.items, strict=True)
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
        der = read_capped(path, what="signature", limit=SIGNATURE_LIMIT, field="signatures")
        try:
            messages.append((der, cmsverify.parse_signed_data(der, str(path))))
        except VerificationError as exc:
            raise ConfigError(
                f"{exc.message}; not a signature that can be timestamped",
                code=exc.code,
                field="signatures",
            ) from None
    with TimestampClient(settings) as client:
        tokens = client.stamp_many([(m.signature, m.digest_name) for _, m in messages])
    write_all(
        (path, cms.add_unsigned_attribute(der, token_attribute(token)))
        for path, (der, _), token in zip(signatures, messages, tokens, strict=True)
    )
    return list(zip(signatures, tokens, strict=True))
