"""Alembic migrations of the store, shipped inside the package (see `sengd.store.db`)."""
