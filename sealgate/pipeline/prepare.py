"""Everything loaded and checked before the first stage, so a typo costs no build."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.options import tsa_settings, verify_policy
from sealgate.pipeline.config import RunConfig
from signer.certificates import load_certificate, load_certificates
from signer.sign import SignOptions
from signer.timestamp import TsaSettings
from signer.verify import VerifyPolicy


@dataclass(frozen=True)
class Prepared:
    """Everything loaded and checked before the first stage, so a typo costs nothing."""

    sign_options: SignOptions
    verify_policy: VerifyPolicy | None
    tsa: TsaSettings | None


def _creatable(path: Path, field: str) -> None:
    """An output whose folder exists, or whose folder's folder does: only one level is made,
    so a typo in a path is an error before the build, not a tree of folders after it."""
    try:
        os.lstat(path)  # a name too long, a file used as a folder: known now, not after signing
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SealgateError(f"{path}: {exc.strerror}", code="path-error", field=field) from None
    folder = path.parent
    if not folder.is_dir() and not folder.parent.is_dir():
        raise SealgateError(
            f"{path}: the folder {folder.parent} does not exist (only the last level is created)",
            code="path-error",
            field=field,
        )


def prepare(config: RunConfig) -> Prepared:
    """Check the configuration and load certificates and trust anchors (usage errors: exit 2)."""
    if not config["key"] and not config["service"]:
        raise SealgateError(
            "--key is required (or $SEALGATE_KEY; or --service and --service-key)",
            code="missing-option",
            field="key",
        )
    if not config["artifacts"]:
        raise SealgateError(
            "--artifacts GLOB is required (or $SEALGATE_ARTIFACTS, or artifacts: in sealgate.yml)",
            code="missing-option",
            field="artifacts",
        )
    for name in ("report", "attestation"):
        _creatable(config[name], name)
    tsa = tsa_settings(config.values)
    certificate: Path | None = config["certificate"]
    options = SignOptions(
        cert=load_certificate(certificate) if certificate else None,
        chain=[c for path in config["chain"] for c in load_certificates(path)],
        cert_source=str(certificate) if certificate else "--certificate",
        tsa=tsa,
    )
    policy = None
    if config["verify"]:
        policy = verify_policy(
            config.values,
            tsa=tsa,
            purpose=" for the verify stage",
            otherwise="; --no-verify to skip it",
        )
    return Prepared(options, policy, tsa)
