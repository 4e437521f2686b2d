"""Where the service keeps its state: SQLite (WAL) by default, PostgreSQL to scale out."""
