"""Store integration tests: real SQLite files and a private PostgreSQL server."""
