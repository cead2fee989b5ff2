"""Persistence of the gateway: allowlist, enclave subnets, leases and the audit log.

- `models`: the SQLAlchemy 2.0 typed ORM models (the schema).
- `db`: engines (SQLite default, PostgreSQL by URL), sessions, migrations on start.
- `allocator`: enclave address leases.
- `allowlist`: the allowlist as the policy's pure `AllowlistEntry` values.
- `subnets`, `audit`: validated creation of enclave subnets, the audit log.
- `legacy`: import of the original SENG server's SQLite databases.

docs/store.md describes the schema, the address encoding and the allocation rules.
"""
