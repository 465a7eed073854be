"""Tenants: the system catalog (tenants, users, grants), keys, and each tenant's state."""
