"""Tenant backup and restore: the sealed streaming envelope, the writer and the restore."""
