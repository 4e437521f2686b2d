"""The store's tables as SQLAlchemy Core objects: the queries use them; migrations create them.

The body column holds the RFC 8785 bytes exactly as hashed; the other record columns are copies
for the indexes (rate limits, the dashboard) and are never what `audit verify` trusts.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

metadata = MetaData()

audit_records = Table(
    "audit_records",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("time", String(32), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("event", String(32), nullable=False),
    Column("key_name", Text, nullable=True),
    Column("grant_name", Text, nullable=True),
    Column("decision", String(16), nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)
Index(
    "ix_audit_records_rate",
    audit_records.c.key_name,
    audit_records.c.grant_name,
    audit_records.c.decision,
    audit_records.c.time,
)

used_tokens = Table(
    "used_tokens",
    metadata,
    Column("issuer", Text, nullable=False),
    Column("jti", Text, nullable=False),
    #: Seconds since the epoch (UTC); NULL is kept for ever.
    Column("expires_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("issuer", "jti", name="uq_used_tokens_issuer_jti"),
)
Index("ix_used_tokens_expires_at", used_tokens.c.expires_at)

signatures = Table(
    "signatures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("record_idx", BigInteger, ForeignKey("audit_records.idx"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("digest_algorithm", String(32), nullable=False),
    Column("digest", Text, nullable=False),
    Column("p7s", LargeBinary, nullable=False),
)
Index("ix_signatures_record_idx", signatures.c.record_idx)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("timestamp", LargeBinary, nullable=True),
    Column("time", String(32), nullable=False),
)
Index("ix_checkpoints_tree_size", checkpoints.c.tree_size)

#: Every table a Sealgate store holds (Alembic's own included).
TABLES = frozenset({*metadata.tables, "alembic_version"})
