"""The PostgreSQL wire protocol, version 3.0."""
