"""The default enclave subnet: `enclave_subnets.is_default`, at most one marked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

A host route given without an enclave subnet leads to the subnet marked default (or to the
only subnet when none is marked). Existing subnets start unmarked, which keeps their meaning:
a database with one subnet has that one as its default, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the flag and the partial unique index allowing one marked subnet."""
    op.add_column(
        "enclave_subnets",
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(
        "uq_enclave_subnets_default",
        "enclave_subnets",
        ["is_default"],
        unique=True,
        sqlite_where=sa.text("is_default"),
        postgresql_where=sa.text("is_default"),
    )


def downgrade() -> None:
    """Drop the index and the flag (which subnet was the default is forgotten)."""
    op.drop_index("uq_enclave_subnets_default", table_name="enclave_subnets")
    op.drop_column("enclave_subnets", "is_default")
