"""`sealgate audit verify|export|prove`: check the signing service's audit log from outside it.

`verify` re-hashes the chain and checks the checkpoints (the database's and those kept
elsewhere); `export` writes the log as JSON lines; `prove` checks one signing event (its
receipt) against a checkpoint a third party kept. Exit 0 verified, 1 broken, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealgate.errors import SealgateError
from sealgate.output import emit_json, one_line
from sealgate.service.audit import merkle
from sealgate.service.audit.checkpoint import NoteVerifier, parse_checkpoint_file, verify_stored
from sealgate.service.audit.export import ExportFormatError, export_lines, parse_export
from sealgate.service.audit.records import AuditRecord
from sealgate.service.audit.verify import KeptCheckpoint, verify_log
from sealgate.service.errors import AuditIntegrityError
from signer.chain import load_trust_roots
from signer.errors import ConfigError
from signer.files import KEY_LIMIT, MIB, read_capped
from signer.http import HttpClient, HttpFailedError, HttpUnavailableError, RetryPolicy
from signer.redact import redact_url

#: An export holds every record (a few hundred bytes each): 1 GiB is millions of them.
EXPORT_LIMIT = 1024 * MIB
CHECKPOINT_LIMIT = 64 * 1024
#: A receipt is one record; a proof is log2(size) hashes.
RECEIPT_LIMIT = 1 * MIB
PROOF_LIMIT = 1 * MIB
MAX_CHECKPOINT_FILES = 100_000
_GET_POLICY = RetryPolicy(attempts=3, timeout=30.0, budget=90.0)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "audit",
        help="verify, export or prove the signing service's audit log",
        description="The service's audit log is a hash chain with signed Merkle checkpoints; "
        "these commands check it without trusting the service.",
    )
    sub = parser.add_subparsers(dest="audit_command", required=True,
                                metavar="{verify,export,prove}")  # fmt: skip

    verify = sub.add_parser("verify", help="re-hash the chain and check every checkpoint")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", metavar="URL", help="the service's database URL")
    source.add_argument("--export", type=Path, metavar="FILE", help="an `audit export` file")
    verify.add_argument("--checkpoints", type=Path, metavar="DIR",
                        help="checkpoints kept outside the database (the audit.export_dir "
                        "files or bare signed notes)")  # fmt: skip
    _add_key_options(verify)
    verify.add_argument("--json", action="store_true", help="print a JSON report")
    verify.set_defaults(handler=run_verify)

    export = sub.add_parser("export", help="write the log and its checkpoints as JSON lines")
    export.add_argument("--db", metavar="URL", required=True, help="the service's database URL")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(handler=run_export)

    prove = sub.add_parser("prove", help="check one signing event against a kept checkpoint")
    prove.add_argument("receipt", type=Path, metavar="RECEIPT",
                       help="the receipt ({index, hash, record}) of a /v1/sign answer")  # fmt: skip
    prove.add_argument("--checkpoint", type=Path, metavar="FILE", required=True,
                       help="a checkpoint kept outside the service")  # fmt: skip
    proof = prove.add_mutually_exclusive_group(required=True)
    proof.add_argument("--service", metavar="URL", help="fetch the inclusion proof from here")
    proof.add_argument("--proof", type=Path, metavar="FILE", help="an inclusion proof (JSON)")
    _add_key_options(prove, required=True)
    prove.add_argument("--json", action="store_true", help="print a JSON report")
    prove.set_defaults(handler=run_prove)


def _add_key_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    key = parser.add_mutually_exclusive_group(required=required)
    key.add_argument("--audit-key-pub", type=Path, metavar="FILE",
                     help="the audit key's public key (PEM); its name is --origin")  # fmt: skip
    key.add_argument("--vkey", metavar="TEXT", help="the note verifier key NAME+HASH+BASE64")
    parser.add_argument("--origin", metavar="NAME",
                        help="the log's origin line (default with --audit-key-pub: the "
                        "checkpoints' own)")  # fmt: skip
    parser.add_argument("--tsa-roots", type=Path, metavar="FILE",
                        help="TSA roots (PEM): every checkpoint must carry a valid timestamp")  # fmt: skip


def _verifier(args: argparse.Namespace, fallback_origin: str | None) -> NoteVerifier | None:
    if args.vkey is not None:
        verifier = NoteVerifier.from_vkey(args.vkey)
        if args.origin is not None and args.origin != verifier.name:
            raise ConfigError(f"--origin {args.origin!r} is not the vkey's name {verifier.name!r}",
                              code="option-conflict", field="origin")  # fmt: skip
        return verifier
    if args.audit_key_pub is None:
        return None
    data = read_capped(args.audit_key_pub, what="--audit-key-pub", limit=KEY_LIMIT,
                       field="audit_key_pub")  # fmt: skip
    try:
        public_key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"--audit-key-pub {args.audit_key_pub}: not a PEM public key",
                          code="malformed-key-file", field="audit_key_pub") from None  # fmt: skip
    origin = args.origin or fallback_origin
    if origin is None:
        raise ConfigError("--audit-key-pub: give --origin (there is no checkpoint to take it "
                          "from)", code="option-conflict", field="origin")  # fmt: skip
    return NoteVerifier.from_public_key(origin, public_key)


def _tsa_roots(args: argparse.Namespace) -> list[x509.Certificate]:
    return [] if args.tsa_roots is None else load_trust_roots(args.tsa_roots, "--tsa-roots")


def read_checkpoint(path: Path, what: str) -> KeptCheckpoint:
    data = read_capped(path, what=what, limit=CHECKPOINT_LIMIT, field="checkpoint")
    where = f"{what} {path}"
    return KeptCheckpoint(where, parse_checkpoint_file(data, where))


def read_checkpoint_dir(folder: Path) -> list[KeptCheckpoint]:
    """Every regular, non-hidden file of `folder` is a checkpoint (sorted by name)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        raise ConfigError(f"--checkpoints {folder}: no such folder", code="file-missing",
                          field="checkpoints") from None  # fmt: skip
    except NotADirectoryError:
        raise ConfigError(f"--checkpoints {folder}: not a folder", code="not-a-file",
                          field="checkpoints") from None  # fmt: skip
    if len(entries) > MAX_CHECKPOINT_FILES:
        raise ConfigError(f"--checkpoints {folder}: more than {MAX_CHECKPOINT_FILES} files",
                          code="file-too-large", field="checkpoints")  # fmt: skip
    return [read_checkpoint(entry, "--checkpoints file") for entry in entries]


def _open_db(url: str) -> Any:
    """The store at `url`, opened as a reader: a SQLite file must exist already and a database
    with no store is refused (opening to write would create an empty
    log, and a mistyped path would then "verify")."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from sealgate.service.store import open_store  # the SQL stack only when a database is read

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if not path.exists():
            raise ConfigError(f"--db {path}: no such file (an audit reads a log, never makes one)",
                              code="file-missing", field="db")  # fmt: skip
        if not path.is_file():
            raise ConfigError(f"--db {path}: not a regular file", code="not-a-file", field="db")
    return open_store(url, create=False)  # a reader: never migrates, never makes a store


def run_verify(args: argparse.Namespace) -> int:
    kept = read_checkpoint_dir(args.checkpoints) if args.checkpoints else []
    store = None
    try:
        if args.export is not None:
            data = read_capped(args.export, what="--export", limit=EXPORT_LIMIT, field="export")
            records: Any
            records, in_file = parse_export(data, f"--export {args.export}")
            checkpoints = [*in_file, *kept]
            source = f"export {args.export}"
        else:
            store = _open_db(args.db)
            records = store.records()
            checkpoints = [
                KeptCheckpoint(f"database checkpoint {n} (size {c.tree_size})", c)
                for n, c in enumerate(store.checkpoints(), start=1)
            ] + kept
            source = f"database {getattr(store, 'where', None) or redact_url(args.db)}"
        first_origin = next((_origin_of(c) for c in checkpoints), None)
        report = verify_log(
            records,
            checkpoints,
            note_verifier=_verifier(args, first_origin),
            tsa_roots=_tsa_roots(args),
        )
    finally:
        if store is not None:
            store.close()
    if args.json:
        emit_json({**report.as_json(), "source": source})
        return 0
    head = "none" if report.head_hash is None else report.head_hash.hex()
    print(f"audit log verified: {source}: {report.records} records, head {head}, "
          f"root {report.root_hash.hex()}")  # fmt: skip
    print(f"  {report.checkpoints} checkpoint(s), covering {report.covered} records; "
          f"{report.signatures_verified} signature(s) and {report.timestamps_verified} "
          "timestamp(s) verified")  # fmt: skip
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def _origin_of(kept: KeptCheckpoint) -> str | None:
    first = kept.checkpoint.note.split("\n", 1)[0]
    return first or None


def run_export(args: argparse.Namespace) -> int:
    """Streams the records (an export may be larger than memory); with --out, into a temp
    file beside it that replaces FILE only when complete."""
    store = _open_db(args.db)
    try:
        if args.out is None:
            for line in export_lines(store):
                sys.stdout.write(line)
            sys.stdout.flush()
            return 0
        written = _export_to(args.out, export_lines(store))
    finally:
        store.close()
    print(f"exported {args.out}: {written} bytes", file=sys.stderr)
    return 0


def _export_to(path: Path, lines: Iterator[str]) -> int:
    written = 0
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write it ({exc.strerror or exc})",
                          code="path-error", field="out") from None  # fmt: skip
    try:
        with os.fdopen(fd, "wb") as stream:
            for line in lines:
                data = line.encode()
                stream.write(data)
                written += len(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write it ({exc.strerror or exc})",
                          code="path-error", field="out") from None  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return written


def _json_file(path: Path, what: str, limit: int) -> Any:
    data = read_capped(path, what=what, limit=limit)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ExportFormatError(f"{what} {path}: not a JSON document", code="bad-input",
                                field=what.lstrip("-")) from None  # fmt: skip


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _receipt(path: Path) -> tuple[int, AuditRecord]:
    document = _json_file(path, "receipt", RECEIPT_LIMIT)
    if isinstance(document, dict) and isinstance(document.get("receipt"), dict):
        document = document["receipt"]  # the whole /v1/sign answer
    where = f"receipt {path}"
    if not isinstance(document, dict) or set(document) != {"index", "hash", "record"}:
        raise ExportFormatError(f"{where}: not a receipt ({{index, hash, record}})",
                                code="bad-input", field="receipt")  # fmt: skip
    records, _ = parse_export(json.dumps(document["record"]).encode(), where)
    if len(records) != 1:
        raise ExportFormatError(f"{where}: its record is not one audit record", code="bad-input",
                                field="receipt")  # fmt: skip
    record = records[0]
    index, hash_text = document["index"], document["hash"]
    if not isinstance(index, int) or isinstance(index, bool) or not isinstance(hash_text, str):
        raise ExportFormatError(f"{where}: index or hash of the wrong type", code="bad-input",
                                field="receipt")  # fmt: skip
    if not (index == record.index == record.body.get("index")):
        raise AuditIntegrityError(f"{where}: says index {index}, its record {record.index}",
                                  code="audit-receipt-mismatch", field="receipt")  # fmt: skip
    try:
        fits = record.recomputed_hash() == record.hash
    except (ValueError, TypeError, UnicodeError):
        fits = False
    if not fits or hash_text != record.hash.hex():
        raise AuditIntegrityError(
            f"{where}: record {index}'s content does not hash to the receipt's hash (edited)",
            code="audit-receipt-mismatch",
            field="receipt",
        )
    return index, record


def _fetch_proof(service: str, index: int, tree_size: int) -> Any:
    from sealgate.service.client import service_base
    from sealgate.service.protocol import API_PROOF

    base = service_base(service)
    url = f"{base}{API_PROOF.format(index=index)}?tree_size={tree_size}"
    where = f"--service {redact_url(base)}"
    try:
        with HttpClient(_GET_POLICY) as client:
            answer = client.request("GET", url, max_bytes=PROOF_LIMIT,
                                    headers={"Accept": "application/json"})  # fmt: skip
    except HttpFailedError as exc:
        raise SealgateError(f"{where}: {exc.reason}", code="service-unavailable",
                            exit_code=3 if exc.kind != "tls" else 2) from None  # fmt: skip
    except HttpUnavailableError as exc:
        raise SealgateError(f"{where}: unavailable ({exc.reason})", code="service-unavailable",
                            exit_code=3) from None  # fmt: skip
    if answer.status == 404:
        raise AuditIntegrityError(
            f"{where}: record {index} is not in the service's log: this signing event was "
            "never recorded, or its record was removed",
            code="audit-not-included",
            field="receipt",
        )
    if answer.status != 200:
        raise SealgateError(f"{where}: answered HTTP {answer.status} for record {index}'s proof",
                            code="service-refused")  # fmt: skip
    try:
        return json.loads(answer.body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SealgateError(f"{where}: the proof is not JSON", code="bad-answer",
                            exit_code=3) from None  # fmt: skip


def _proof_hashes(document: Any, where: str) -> tuple[int, int, bytes, list[bytes]]:
    try:
        index, size = document["index"], document["tree_size"]
        record_hash = bytes.fromhex(document["record_hash"])
        proof = [bytes.fromhex(p) for p in document["proof"]]
        if (
            any(not isinstance(v, int) or isinstance(v, bool) for v in (index, size))
            or len(proof) > 64
        ):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise SealgateError(f"{where}: not an inclusion proof (index, tree_size, record_hash, "
                            "proof)", code="bad-input") from None  # fmt: skip
    return index, size, record_hash, proof


def run_prove(args: argparse.Namespace) -> int:
    index, record = _receipt(args.receipt)
    kept = read_checkpoint(args.checkpoint, "--checkpoint")
    verifier = _verifier(args, _origin_of(kept))
    checkpoint, _, stamped = verify_stored(kept.checkpoint, verifier, kept.where,
                                           tsa_roots=_tsa_roots(args))  # fmt: skip
    size = checkpoint.tree_size
    if index >= size:
        raise AuditIntegrityError(
            f"{kept.where}: covers records 0..{size - 1}, not record {index}: keep a newer "
            "checkpoint and prove again",
            code="audit-not-covered",
            field="checkpoint",
        )
    if args.proof is not None:
        document, where = _json_file(args.proof, "--proof", PROOF_LIMIT), f"--proof {args.proof}"
    else:
        document, where = _fetch_proof(args.service, index, size), "the service's proof"
    proof_index, proof_size, proof_hash, proof = _proof_hashes(document, where)
    if (proof_index, proof_size) != (index, size):
        raise AuditIntegrityError(
            f"{where}: is for record {proof_index} in a tree of {proof_size}, not record {index} "
            f"in the checkpoint's {size}",
            code="audit-not-included",
            field="proof",
        )
    if proof_hash != record.hash or not merkle.verify_inclusion(
        index, size, record.hash, proof, checkpoint.root_hash
    ):
        raise AuditIntegrityError(
            f"record {index} (hash {record.hash.hex()[:16]}…) is not in the log the checkpoint "
            f"signs ({kept.where}): the proof does not lead to its root",
            code="audit-not-included",
            field="proof",
        )
    assert verifier is not None  # noqa: S101 - the key options are required for prove
    if args.json:
        emit_json({"proved": True, "index": index, "hash": record.hash.hex(), "tree_size": size,
                   "root_hash": checkpoint.root_hash.hex(), "vkey": verifier.vkey,
                   "timestamp_verified": stamped})  # fmt: skip
        return 0
    body = record.body
    print(f"proved: record {index} ({one_line(str(body.get('event')))} "
          f"{one_line(str(body.get('decision')))}, key {one_line(str(body.get('key')))}) is in "
          f"the log at tree size {size}, checkpoint signed by {verifier.name}"
          f"{', timestamped' if stamped else ''}")  # fmt: skip
    return 0
