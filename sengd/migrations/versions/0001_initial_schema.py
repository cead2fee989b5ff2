"""Initial schema: enclave subnets, allowlist (apps, host routes, categories), leases, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Addresses are unsigned 32-bit integers (host order) in BIGINT columns; see docs/store.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Ids of tables that grow without bound: 64-bit on PostgreSQL, the rowid on SQLite.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)
_HASH = sa.LargeBinary(length=32)


def upgrade() -> None:
    """Create every table of the store."""
    op.create_table(
        "enclave_subnets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("network", sa.BigInteger(), nullable=False),
        sa.Column("prefix_len", sa.SmallInteger(), nullable=False),
        sa.Column("gateway", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.CheckConstraint(
            "gateway > network"
            " AND gateway < network + (CAST(1 AS BIGINT) << (32 - prefix_len)) - 1",
            name=op.f("ck_enclave_subnets_gateway_inside"),
        ),
        sa.CheckConstraint(
            "network % (CAST(1 AS BIGINT) << (32 - prefix_len)) = 0",
            name=op.f("ck_enclave_subnets_network_aligned"),
        ),
        sa.CheckConstraint(
            "network >= 0 AND network <= 4294967295", name=op.f("ck_enclave_subnets_network_range")
        ),
        sa.CheckConstraint(
            "prefix_len >= 8 AND prefix_len <= 30",
            name=op.f("ck_enclave_subnets_prefix_len_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enclave_subnets")),
        sa.UniqueConstraint("name", name=op.f("uq_enclave_subnets_name")),
        sa.UniqueConstraint(
            "network", "prefix_len", name=op.f("uq_enclave_subnets_network_prefix_len")
        ),
    )

    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("mr_enclave", _HASH, nullable=True),
        sa.Column("mr_signer", _HASH, nullable=True),
        sa.Column("isv_prod_id", sa.Integer(), nullable=True),
        sa.Column("min_isv_svn", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("allow_debug", sa.Boolean(), nullable=True),
        sa.Column("quote_statuses", sa.JSON(), nullable=True),
        sa.Column("tcb_statuses", sa.JSON(), nullable=True),
        sa.Column("denied_advisories", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.CheckConstraint(
            "mr_enclave IS NOT NULL OR (mr_signer IS NOT NULL AND isv_prod_id IS NOT NULL)",
            name=op.f("ck_apps_match_mode"),
        ),
        sa.CheckConstraint(
            "isv_prod_id >= 0 AND isv_prod_id <= 65535", name=op.f("ck_apps_isv_prod_id_range")
        ),
        sa.CheckConstraint(
            "min_isv_svn >= 0 AND min_isv_svn <= 65535", name=op.f("ck_apps_min_isv_svn_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
    )
    op.create_index("ix_apps_mr_enclave", "apps", ["mr_enclave"])
    op.create_index("ix_apps_mr_signer_isv_prod_id", "apps", ["mr_signer", "isv_prod_id"])

    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("name", name=op.f("uq_categories_name")),
    )

    op.create_table(
        "app_categories",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_app_categories_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["categories.id"],
            name=op.f("fk_app_categories_category_id_categories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "category_id", name=op.f("pk_app_categories")),
    )
    op.create_index(op.f("ix_app_categories_category_id"), "app_categories", ["category_id"])

    op.create_table(
        "app_host_routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("host_network", sa.BigInteger(), nullable=False),
        sa.Column("host_prefix_len", sa.SmallInteger(), nullable=False),
        sa.Column("enclave_subnet_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "host_network % (CAST(1 AS BIGINT) << (32 - host_prefix_len)) = 0",
            name=op.f("ck_app_host_routes_host_network_aligned"),
        ),
        sa.CheckConstraint(
            "host_network >= 0 AND host_network <= 4294967295",
            name=op.f("ck_app_host_routes_host_network_range"),
        ),
        sa.CheckConstraint(
            "host_prefix_len >= 0 AND host_prefix_len <= 32",
            name=op.f("ck_app_host_routes_prefix_len_range"),
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_app_host_routes_app_id_apps"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["enclave_subnet_id"],
            ["enclave_subnets.id"],
            name=op.f("fk_app_host_routes_enclave_subnet_id_enclave_subnets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_host_routes")),
        sa.UniqueConstraint(
            "app_id",
            "host_network",
            "host_prefix_len",
            name=op.f("uq_app_host_routes_app_id_host_network_host_prefix_len"),
        ),
    )
    op.create_index(
        op.f("ix_app_host_routes_enclave_subnet_id"), "app_host_routes", ["enclave_subnet_id"]
    )

    op.create_table(
        "leases",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("subnet_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.BigInteger(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("mr_enclave", _HASH, nullable=False),
        sa.Column("mr_signer", _HASH, nullable=False),
        sa.Column("isv_prod_id", sa.Integer(), nullable=True),
        sa.Column("isv_svn", sa.Integer(), nullable=True),
        sa.Column("app_id", sa.Integer(), nullable=True),
        sa.Column("host_address", sa.BigInteger(), nullable=False),
        sa.Column("host_port", sa.Integer(), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("packets_in", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "(ended_at IS NULL AND end_reason IS NULL)"
            " OR (ended_at IS NOT NULL AND end_reason IS NOT NULL)",
            name=op.f("ck_leases_end_consistent"),
        ),
        sa.CheckConstraint(
            "address >= 0 AND address <= 4294967295", name=op.f("ck_leases_address_range")
        ),
        sa.CheckConstraint(
            "host_address >= 0 AND host_address <= 4294967295", name=op.f("ck_leases_host_range")
        ),
        sa.CheckConstraint(
            "host_port >= 0 AND host_port <= 65535", name=op.f("ck_leases_host_port_range")
        ),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_leases_app_id_apps"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"],
            ["enclave_subnets.id"],
            name=op.f("fk_leases_subnet_id_enclave_subnets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
    )
    op.create_index(op.f("ix_leases_app_id"), "leases", ["app_id"])
    op.create_index("ix_leases_gateway_id_ended_at", "leases", ["gateway_id", "ended_at"])
    op.create_index("ix_leases_subnet_id_address", "leases", ["subnet_id", "address"])
    # The constraint that makes double allocation impossible: one open lease per address.
    op.create_index(
        "uq_leases_open_address",
        "leases",
        ["address"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor_uid", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])
    op.create_index("ix_audit_events_object", "audit_events", ["object_type", "object_id"])


def downgrade() -> None:
    """Drop every table of the store (and its data)."""
    op.drop_table("audit_events")
    op.drop_table("leases")
    op.drop_table("app_host_routes")
    op.drop_table("app_categories")
    op.drop_table("categories")
    op.drop_table("apps")
    op.drop_table("enclave_subnets")
