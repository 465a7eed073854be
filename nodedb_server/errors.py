"""Errors that travel to clients carry an SQLSTATE (the table at the end of docs/SQL.md)."""

from __future__ import annotations


class DBError(Exception):
    """An error reported to the client as an ErrorResponse."""

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, sqlstate: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.detail = detail


class SyntaxError_(DBError):
    sqlstate = "42601"


class UndefinedTable(DBError):
    sqlstate = "42P01"


class UndefinedColumn(DBError):
    sqlstate = "42703"


class UndefinedFunction(DBError):
    sqlstate = "42883"


class UniqueViolation(DBError):
    sqlstate = "23505"


def duplicate_key(collection: str, key_field: str, key: object, where: str = "") -> UniqueViolation:
    """A second row with the same primary key, said as PostgreSQL says it."""
    shown = key if isinstance(key, str) else repr(key)
    return UniqueViolation(
        f'duplicate key value violates unique constraint "{collection}_pkey"{where}',
        detail=f"Key ({key_field})=({shown}) already exists.",
    )


class NotNullViolation(DBError):
    sqlstate = "23502"


class DuplicateTable(DBError):
    sqlstate = "42P07"


class DuplicateColumn(DBError):
    sqlstate = "42701"


class DataError(DBError):
    sqlstate = "22000"


class InvalidTextRepresentation(DBError):
    sqlstate = "22P02"


class NumericValueOutOfRange(DBError):
    sqlstate = "22003"


class InvalidCatalogName(DBError):
    sqlstate = "3D000"


class InvalidPassword(DBError):
    sqlstate = "28P01"
    severity = "FATAL"


class InvalidAuthorization(DBError):
    sqlstate = "28000"
    severity = "FATAL"


class InsufficientPrivilege(DBError):
    sqlstate = "42501"


class TooManyConnections(DBError):
    sqlstate = "53300"
    severity = "FATAL"


class StatementTooComplex(DBError):
    """Expressions or values nested (or chained) deeper than the server can follow."""

    sqlstate = "54001"


class DiskFull(DBError):
    sqlstate = "53100"


class QueryCanceled(DBError):
    sqlstate = "57014"


class AdminShutdown(DBError):
    sqlstate = "57P01"
    severity = "FATAL"


class CannotConnectNow(DBError):
    sqlstate = "57P03"
    severity = "FATAL"


class ObjectInUse(DBError):
    sqlstate = "55006"


class ObjectNotInPrerequisiteState(DBError):
    sqlstate = "55000"


class ProtocolViolation(DBError):
    sqlstate = "08P01"
    severity = "FATAL"


class FeatureNotSupported(DBError):
    sqlstate = "0A000"


class InFailedTransaction(DBError):
    sqlstate = "25P02"


class ActiveSqlTransaction(DBError):
    sqlstate = "25001"


class InvalidSqlStatementName(DBError):
    """No prepared statement of that name."""

    sqlstate = "26000"


class DuplicatePreparedStatement(DBError):
    sqlstate = "42P05"


class DuplicateObject(DBError):
    sqlstate = "42710"


class UndefinedObject(DBError):
    sqlstate = "42704"


class InvalidParameterValue(DBError):
    sqlstate = "22023"


class WrongObjectType(DBError):
    sqlstate = "42809"


class UndefinedFile(DBError):
    sqlstate = "58P01"


class StorageFailure(DBError):
    """The tenant's WAL could not be made durable (fsync or write failed)."""

    sqlstate = "58030"


class ConfigError(Exception):
    """A bad configuration stops start-up; the message names the key."""
