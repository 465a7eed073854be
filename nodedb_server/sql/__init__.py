"""SQL: parsing (sqlglot for standard statements, a small parser for NodeDB's own) and execution."""
