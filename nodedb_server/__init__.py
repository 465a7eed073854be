"""nodedb-server: a multi-model database server speaking the PostgreSQL wire protocol."""

__version__ = "0.1.0"
