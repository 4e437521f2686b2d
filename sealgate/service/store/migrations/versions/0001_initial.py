"""The first schema: audit records, used token ids, returned signatures and checkpoints."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("key_name", sa.Text, nullable=True),
        sa.Column("grant_name", sa.Text, nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index(
        "ix_audit_records_rate", "audit_records", ["key_name", "grant_name", "decision", "time"]
    )
    op.create_table(
        "used_tokens",
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("issuer", "jti", name="uq_used_tokens_issuer_jti"),
    )
    op.create_index("ix_used_tokens_expires_at", "used_tokens", ["expires_at"])
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_idx", sa.BigInteger, sa.ForeignKey("audit_records.idx"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("digest_algorithm", sa.String(32), nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("p7s", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_signatures_record_idx", "signatures", ["record_idx"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("timestamp", sa.LargeBinary, nullable=True),
        sa.Column("time", sa.String(32), nullable=False),
    )
    op.create_index("ix_checkpoints_tree_size", "checkpoints", ["tree_size"])


def downgrade() -> None:
    for table in ("checkpoints", "signatures", "used_tokens", "audit_records"):
        op.drop_table(table)
