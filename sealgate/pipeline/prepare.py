"""Everything loaded and checked before the first stage, so a typo costs no build."""

from __future__ import annotations

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


def prepare(config: RunConfig) -> Prepared:
    """Check the configuration and load certificates and trust anchors (usage errors: exit 2)."""
    if not config["key"]:
        raise SealgateError(
            "--key is required (or $SEALGATE_KEY, or key: in sealgate.yml)",
            code="missing-option",
            field="key",
        )
    if not config["artifacts"]:
        raise SealgateError(
            "--artifacts GLOB is required (or $SEALGATE_ARTIFACTS, or artifacts: in sealgate.yml)",
            code="missing-option",
            field="artifacts",
        )
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
        what = " for the verify stage (--no-verify to skip it)"
        policy = verify_policy(config.values, tsa=tsa, what=what)
    return Prepared(options, policy, tsa)
