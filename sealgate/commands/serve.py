"""`sealgate serve`: the central signing service (needs the `service` extra).

CI jobs send digests and their OIDC ID token; the service checks the token against the key's
grants, signs with keys only it holds, and records every decision in a chained audit log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.service.config import ServiceConfig
from sealgate.service.errors import ServiceError
from signer.redact import redact_url

#: The code of each `--check` finding about a grant.
CHECK_CODE = "grant-too-broad"
_EXTRA_HINT = "install the service extra: pip install 'sealgate[service]'"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the signing service (OIDC-authenticated CI jobs, per-key grants, audit log)",
        description="Serve POST /v1/sign and the audit log's checkpoints and proofs. Keys, "
        "the store and the audit key are opened at start-up: a key or database that does not "
        "answer is exit 3, a wrong service.yml exit 2. SIGTERM stops gracefully and writes a "
        "final checkpoint.",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="service.yml",
                        help="the service configuration (issuers, keys, grants, audit)")  # fmt: skip
    parser.add_argument("--db", metavar="URL", default=None,
                        help="database URL: sqlite:///PATH (default: the config's) or "
                        "postgresql://user@host/db")  # fmt: skip
    parser.add_argument("--listen", metavar="HOST:PORT", default=None,
                        help="address to listen on (default: the config's, 127.0.0.1:8443)")  # fmt: skip
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", default=None,
                        help="PEM certificate (chain) to serve HTTPS with")  # fmt: skip
    parser.add_argument("--tls-key", type=Path, metavar="FILE", default=None,
                        help="PEM private key of --tls-cert")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the listening socket (default 1)")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and open the keys, then exit")  # fmt: skip
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from sealgate.service import server
        from sealgate.service.configfile import load_config
    except ImportError as exc:  # the Action's pinned environment has no web stack
        raise SealgateError(f"sealgate serve needs {exc.name or 'the service stack'}",
                            hint=_EXTRA_HINT, code="service-extra-missing") from None  # fmt: skip
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SealgateError("--tls-cert and --tls-key go together", code="bad-input",
                            field="tls_cert")  # fmt: skip
    if args.workers < 1 or args.workers > 64:
        raise SealgateError(f"--workers {args.workers}: between 1 and 64", field="workers")
    config = load_config(args.config)
    host, port = server.parse_listen(args.listen or config.listen)
    db_url = args.db or config.database
    if _findings(config):  # a grant --check refuses is never served either
        return 2
    if args.check:
        return _check(args.config, config, db_url)
    options = server.ServeOptions(host, port, args.tls_cert, args.tls_key, args.workers)
    scheme = "https" if args.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host

    def ready() -> None:
        print(f"sealgate serve: listening on {scheme}://{shown}:{port}, "
              f"{len(config.keys)} key(s), database {_shown(db_url)}",
              file=sys.stderr, flush=True)  # fmt: skip

    if args.workers > 1:
        ready()
        server.serve_workers(args.config, args.db, options)
        return 0
    service = server.open_service(config, db_url)
    server.serve(service, options, ready)
    print("sealgate serve: stopped (final checkpoint written, keys and store closed)",
          file=sys.stderr)  # fmt: skip
    return 0


def _shown(url: str) -> str:
    """A database URL as it may be shown: credentials removed (a SQLite path has none)."""
    return url if url.startswith("sqlite:") else redact_url(url)


def _findings(config: ServiceConfig) -> list[str]:
    """The grants that do not pin enough, each printed as one error line naming file and line."""
    from sealgate.service import grants

    findings = grants.check_config(config)
    for finding in findings:
        print(f"sealgate: error: [{CHECK_CODE}] {finding}", file=sys.stderr)
    return findings


def _check(path: Path, config: ServiceConfig, db_url: str) -> int:
    """`--check` past the grants' findings: open every key and the audit key once, and the
    database as a reader (never created nor migrated), then close them, having written nothing."""
    from sealgate.service.audit.checkpointer import Checkpointer
    from sealgate.service.signing import NoteKey, Signer
    from sealgate.service.store import open_store

    Signer(config).close()
    note_key = NoteKey(config.audit.key_uri) if config.audit.key_uri else None
    try:
        try:
            store = open_store(db_url, create=False)
        except ServiceError as exc:
            if exc.code != "store-empty":
                raise
            print(f"serve --check: database {_shown(db_url)} is empty or absent: the first "
                  "start creates its schema")  # fmt: skip
        else:
            try:
                print(f"serve --check: {Checkpointer(store, config.audit, note_key).describe()}")
                print(f"serve --check: database {_shown(db_url)}: {store.size()} record(s)")
            finally:
                store.close()
    finally:
        if note_key is not None:
            note_key.close()
    print(f"serve --check: {path}: {len(config.keys)} key(s) opened, "
          f"{len(config.issuers)} issuer(s): ok")  # fmt: skip
    return 0
