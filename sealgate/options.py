"""Option groups shared by several commands, so each means the same everywhere."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography import x509

from integrity.policy import Policy, load_policy_file
from sealgate.errors import SealgateError
from signer.chain import load_trust_roots, load_untrusted
from signer.redact import redact_url
from signer.timestamp import TsaSettings


def _env_list(name: str) -> list[str]:
    return [item for item in os.environ.get(name, "").replace(",", " ").split() if item]


def policy_file(path: Path) -> Policy:
    """`--policy FILE` and its key files (regular, capped, the key files inside its folder)."""
    return load_policy_file(path, what="--policy")


def add_tsa_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    group = parser.add_argument_group("RFC 3161 timestamps")
    group.add_argument(
        "--tsa",
        action="append",
        default=None,
        metavar="URL",
        help="timestamp authority; repeat for fallbacks, tried in order (or $SEALGATE_TSA_URLS)"
        + (" [required]" if required else ""),
    )
    group.add_argument(
        "--tsa-roots",
        type=Path,
        default=os.environ.get("SEALGATE_TSA_ROOTS"),
        help="trust anchors (PEM) for the TSA certificates; required with --tsa",
    )
    add_tsa_certs_option(group)
    group.add_argument("--tsa-timeout", type=float, default=10.0, help="seconds per request")
    group.add_argument("--tsa-retries", type=int, default=2, help="retries per TSA (backoff)")
    group.add_argument(
        "--tsa-concurrency", type=int, default=8, help="requests in flight at once for a batch"
    )


def add_tsa_certs_option(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--tsa-certs",
        type=Path,
        default=os.environ.get("SEALGATE_TSA_CERTS") or None,  # empty: not set (CI inputs)
        metavar="PEM",
        help="untrusted TSA certificates and intermediates (PEM), for tokens that do not "
        "carry them; trust still comes from --tsa-roots (or $SEALGATE_TSA_CERTS)",
    )


def tsa_certs(args: argparse.Namespace) -> tuple[x509.Certificate, ...]:
    """The --tsa-certs bundle, or none."""
    path = getattr(args, "tsa_certs", None)
    return tuple(load_untrusted(Path(path), "--tsa-certs")) if path else ()


def tsa_settings(args: argparse.Namespace, *, required: bool = False) -> TsaSettings | None:
    """The TSA settings the options describe; None when no TSA was asked for."""
    urls = args.tsa or _env_list("SEALGATE_TSA_URLS")
    if not urls:
        if required:
            raise SealgateError("--tsa URL is required (or set SEALGATE_TSA_URLS)")
        return None
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SealgateError(f"--tsa {redact_url(url)!r}: not an http(s) URL")
    if args.tsa_roots is None:
        raise SealgateError(
            "--tsa-roots is required with --tsa: a timestamp is used only when its TSA "
            "certificate chains to a root you trust"
        )
    if not 0 < args.tsa_timeout <= 600:
        raise SealgateError("--tsa-timeout must be between 0 and 600 seconds")
    if not 0 <= args.tsa_retries <= 10:
        raise SealgateError("--tsa-retries must be between 0 and 10")
    if not 1 <= args.tsa_concurrency <= 64:
        raise SealgateError("--tsa-concurrency must be between 1 and 64")
    return TsaSettings(
        urls=tuple(urls),
        roots=tuple(load_trust_roots(Path(args.tsa_roots), "--tsa-roots")),
        certs=tsa_certs(args),
        timeout=args.tsa_timeout,
        retries=args.tsa_retries,
        concurrency=args.tsa_concurrency,
    )
