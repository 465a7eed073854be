"""Durable storage: WAL with group commit, L1 checkpoint segments, crash recovery."""
