"""Everything loaded and checked before the first stage, so a typo costs no build."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.options import tsa_certs, tsa_settings
from sealgate.pipeline.config import RunConfig
from signer.certificates import load_certificate, load_certificates
from signer.chain import load_trust_roots
from signer.sign import SignOptions
from signer.timestamp import TsaSettings
from signer.verify import VerifyPolicy, parse_identities


@dataclass(frozen=True)
class Prepared:
    """Everything loaded and checked before the first stage, so a typo costs nothing."""

    sign_options: SignOptions
    verify_policy: VerifyPolicy | None
    tsa: TsaSettings | None


def prepare(config: RunConfig) -> Prepared:
    """Check the configuration and load certificates and trust anchors (usage errors: exit 2)."""
    if not config["key"]:
        raise SealgateError("--key is required (or $SEALGATE_KEY, or key: in sealgate.yml)")
    if not config["artifacts"]:
        raise SealgateError(
            "--artifacts GLOB is required (or $SEALGATE_ARTIFACTS, or artifacts: in sealgate.yml)"
        )
    tsa = tsa_settings(
        argparse.Namespace(
            tsa=config["tsa_urls"],
            tsa_roots=config["tsa_roots"],
            tsa_certs=config["tsa_certs"],
            tsa_timeout=config["tsa_timeout"],
            tsa_retries=config["tsa_retries"],
            tsa_concurrency=config["tsa_concurrency"],
        )
    )
    certificate: Path | None = config["certificate"]
    options = SignOptions(
        cert=load_certificate(certificate) if certificate else None,
        chain=[c for path in config["chain"] for c in load_certificates(path)],
        cert_source=str(certificate) if certificate else "--certificate",
        tsa=tsa,
    )
    policy = None
    if config["verify"]:
        if config["trust_roots"] is None:
            raise SealgateError(
                "--trust-roots is required for the verify stage "
                "(or $SEALGATE_TRUST_ROOTS; --no-verify to skip it)"
            )
        parse_identities(config["identity"])  # a malformed identity is a usage error, up front
        policy = VerifyPolicy(
            trust_roots=load_trust_roots(config["trust_roots"], "--trust-roots"),
            tsa_roots=tsa.roots
            if tsa
            else (
                load_trust_roots(config["tsa_roots"], "--tsa-roots") if config["tsa_roots"] else ()
            ),
            tsa_certs=tsa.certs
            if tsa
            else tsa_certs(argparse.Namespace(tsa_certs=config["tsa_certs"])),
            identities=config["identity"],
            require_timestamp=tsa is not None,
        )
    return Prepared(options, policy, tsa)
