"""Tenants, users, grants, settings, prepared statements, CHECKPOINT, catalog queries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.errors import (
    ActiveSqlTransaction,
    DBError,
    DuplicatePreparedStatement,
    FeatureNotSupported,
    InsufficientPrivilege,
    InvalidParameterValue,
    SyntaxError_,
    UndefinedColumn,
    UndefinedObject,
)
from nodedb_server.sql import ast
from nodedb_server.sql.describe import describe, param_types
from nodedb_server.sql.expr import (
    Cast,
    Expr,
    Field,
)
from nodedb_server.sql.pg_catalog import live_tables
from nodedb_server.sql.registry import Exprs, Prepared, statement
from nodedb_server.sql.result import Column, Result

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session


# Settings whose change the client is told of (ParameterStatus), by their reported names.
REPORTED_SETTINGS = {
    "client_encoding": "client_encoding",
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "application_name": "application_name",
    "intervalstyle": "IntervalStyle",
}

SHOW_TENANTS_COLUMNS = [
    ("name", t.TEXT),
    ("id", t.INT8),
    ("collections", t.INT8),
    ("size_bytes_estimate", t.INT8),
    ("status", t.TEXT),
]


# SHOW heads its column with the parameter's own spelling, as PostgreSQL does.
_SHOWN_AS = {
    "timezone": "TimeZone",
    "time zone": "TimeZone",
    "datestyle": "DateStyle",
    "intervalstyle": "IntervalStyle",
}


def show_columns(s: Session, stmt: ast.Show, param_oids: list[int]) -> list[Column]:
    if stmt.name == "all":
        return [("name", t.TEXT), ("setting", t.TEXT), ("description", t.TEXT)]
    return [(_SHOWN_AS.get(stmt.name.lower(), stmt.name), t.TEXT)]


def catalog_columns(s: Session, stmt: ast.CatalogQuery, param_oids: list[int]) -> list[Column]:
    return list(stmt.query.columns(param_oids, live_tables(s)))


def catalog_param_types(s: Session, stmt: ast.CatalogQuery, declared: tuple[int, ...]) -> list[int]:
    """A catalog query types its parameters itself, from what they are compared with."""
    inferred = stmt.query.param_types()
    return [declared[i] if i < len(declared) and declared[i] else o for i, o in enumerate(inferred)]


def execute_columns(
    s: Session, stmt: ast.ExecutePrepared, param_oids: list[int]
) -> list[Column] | None:
    prepared = s.prepared_statement(stmt.name)
    if prepared.described:
        return prepared.columns
    return s.describe(prepared.stmt, prepared.param_oids)


def execute_exprs(s: Session, stmt: ast.ExecutePrepared) -> Exprs:
    return list(typed_args(s, stmt)), []


@statement(ast.AlterSystem)
async def alter_system(s: Session, stmt: ast.AlterSystem, params: list[Any]) -> Result:
    s.require_superuser("change system settings")
    if stmt.name != "deactivated_collection_retention_days":
        raise UndefinedObject(f'unrecognized configuration parameter "{stmt.name}"')
    try:
        days = float(stmt.value)
    except ValueError:
        raise DBError(
            f'invalid value for parameter "{stmt.name}": "{stmt.value[:40]}"', sqlstate="22023"
        ) from None
    if days < 0:
        raise DBError(f'parameter "{stmt.name}" must not be negative', sqlstate="22023")
    await s.manager.set_setting(stmt.name, days)
    return Result(None, [], "ALTER SYSTEM")


def current_setting(s: Session, name: Any) -> str:
    key = str(name).lower()
    if key not in s.settings and key != "jit":
        raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
    return s.settings.get(key, "off")  # no JIT here: "jit" reads off


def set_config(s: Session, name: Any, value: Any, is_local: Any = False) -> str:
    key, text = str(name).lower(), str(value)
    if key in FIXED_SETTINGS:
        raise DBError(f'parameter "{key}" cannot be changed', sqlstate="55P02")
    if key in ("session_authorization", "role"):
        text = _identity_setting(s, key, text)
    s.settings[key] = text
    return text


@statement(
    ast.CatalogQuery,
    columns=catalog_columns,
    param_types=catalog_param_types,
    writes=False,
    implicit=True,
)
async def catalog_query(s: Session, stmt: ast.CatalogQuery, params: list[Any]) -> Result:
    columns, rows = stmt.query.run(params, list(stmt.query.param_types()), live_tables(s))
    return Result(columns, rows, f"SELECT {len(rows)}")


@statement(ast.CreateTenant)
async def create_tenant(s: Session, stmt: ast.CreateTenant, params: list[Any]) -> Result:
    s.require_superuser("create tenants")
    await s.manager.create_tenant(stmt.name)
    return Result(None, [], "CREATE TENANT")


@statement(ast.DropTenant)
async def drop_tenant(s: Session, stmt: ast.DropTenant, params: list[Any]) -> Result:
    s.require_superuser("drop tenants")
    await s.manager.drop_tenant(stmt.name)
    return Result(None, [], "DROP TENANT")


@statement(ast.PurgeTenant)
async def purge_tenant(s: Session, stmt: ast.PurgeTenant, params: list[Any]) -> Result:
    s.require_superuser("purge tenants")
    done = await s.manager.purge_tenant(stmt.name)
    notices = [] if done else [f'tenant "{stmt.name}" does not exist; nothing to purge']
    return Result(None, [], "PURGE TENANT", notices)


@statement(ast.ShowTenants, columns=SHOW_TENANTS_COLUMNS, writes=False)
async def show_tenants(s: Session, stmt: ast.ShowTenants, params: list[Any]) -> Result:
    s.require_superuser("list tenants")
    rows: list[tuple[Any, ...]] = []
    for name, info in sorted(s.manager.system.tenants.items(), key=lambda kv: kv[1]["id"]):
        tenant = s.manager.tenants.get(name)
        if tenant is None or info["status"] != "active":
            continue
        if tenant.status != "online":  # its state is not there (yet) to count
            rows.append((name, info["id"], None, None, tenant.status))
            continue
        active = tenant.state.active()
        size = sum(tenant.state.engines[m.name].size_bytes for m in active)
        rows.append((name, info["id"], len(active), size, tenant.status))
    return Result(describe(s, stmt, []), rows, f"SHOW {len(rows)}")


@statement(ast.CreateUser)
async def create_user(s: Session, stmt: ast.CreateUser, params: list[Any]) -> Result:
    s.require_superuser("create users")
    await s.manager.create_user(stmt.name, stmt.password, stmt.tenant or s.tenant.name, False)
    return Result(None, [], "CREATE ROLE")


@statement(ast.DropUser)
async def drop_user(s: Session, stmt: ast.DropUser, params: list[Any]) -> Result:
    s.require_superuser("drop users")
    await s.manager.drop_user(stmt.name)
    return Result(None, [], "DROP ROLE")


@statement(ast.Grant)
async def run_grant(s: Session, stmt: ast.Grant, params: list[Any]) -> Result:
    s.require_superuser("grant privileges")
    await s.manager.grant(stmt.privilege, stmt.tenant, stmt.user)
    return Result(None, [], "GRANT")


FIXED_SETTINGS = ("server_version", "server_encoding", "is_superuser", "integer_datetimes")


def _identity_setting(s: Session, name: str, value: str | None) -> str:
    """What SET session_authorization or SET role may store: the session's own user,
    or the default. Another role is refused as PostgreSQL refuses a non-superuser
    (42501); the superuser too (0A000), since this server cannot act as another user
    and SHOW must not claim that it does."""
    own = s.user["name"]
    if value is None or (name == "role" and value.lower() == "none"):
        return own if name == "session_authorization" else "none"
    if value == own:
        return value
    if s.manager.user(value) is None:
        raise InvalidParameterValue(f'role "{value}" does not exist')
    if not s.user["superuser"]:
        if name == "role":
            raise InsufficientPrivilege(f'permission denied to set role "{value}"')
        raise InsufficientPrivilege("permission denied to set session authorization")
    raise FeatureNotSupported(
        f'{name} cannot name another user ("{value}"): a session acts as the user it '
        "logged in as; connect as that user instead"
    )


@statement(ast.SetVar, writes=False)
async def set_var(s: Session, stmt: ast.SetVar, params: list[Any]) -> Result:
    name = stmt.name.lower()
    value = stmt.value
    if name == "client_encoding" and value is not None:
        if value.strip("'\"").upper().replace("-", "").replace("_", "") not in (
            "UTF8",
            "UNICODE",
        ):
            raise DBError(
                f'invalid value for parameter "client_encoding": "{value}"', sqlstate="22023"
            )
        value = "UTF8"
    if name in FIXED_SETTINGS:
        raise DBError(f'parameter "{name}" cannot be changed', sqlstate="55P02")
    if name == "timezone" and value is not None:
        try:
            value = t.zone_setting(value)
        except ValueError:
            raise DBError(
                f'invalid value for parameter "TimeZone": "{value}"', sqlstate="22023"
            ) from None
    if name in ("session_authorization", "role"):
        value = _identity_setting(s, name, value)
    if name == "statement_timeout" and value is not None:
        try:
            t.timeout_setting_ms(value)
        except ValueError:
            raise DBError(
                f'invalid value for parameter "statement_timeout": "{value}"', sqlstate="22023"
            ) from None
    if value is None and name == "all":
        return Result(None, [], "RESET", parameter_status=_restore_settings(s))
    if value is None:  # RESET name, SET name TO DEFAULT: its value at connection start
        value = s._initial_settings.get(name, "")
    s.settings[name] = value
    status = {}
    if name in REPORTED_SETTINGS:
        status[REPORTED_SETTINGS[name]] = s.settings[name]
    return Result(None, [], "SET", parameter_status=status)


@statement(ast.Show, columns=show_columns, writes=False, implicit=True)
async def run_show(s: Session, stmt: ast.Show, params: list[Any]) -> Result:
    if stmt.name == "all":
        rows = [(k, v, "") for k, v in sorted(s.settings.items())]
        if s.user["superuser"]:
            rows += [(k, v, "server configuration") for k, v in server_settings(s).items()]
        return Result(describe(s, stmt, []), rows, f"SHOW {len(rows)}")
    key = stmt.name.replace(" ", "")
    if key not in s.settings:
        config = server_settings(s)
        if key in config:
            s.require_superuser("examine the server configuration")
            return Result(describe(s, stmt, []), [(config[key],)], "SHOW")
        raise UndefinedObject(f'unrecognized configuration parameter "{stmt.name}"')
    return Result(describe(s, stmt, []), [(s.settings[key],)], "SHOW")


def server_settings(s: Session) -> dict[str, str]:
    """The server's configuration (config/nodedb.toml keys) as SHOW prints it, with
    every secret masked."""
    out = {}
    for key, value in sorted(s.manager.cfg.describe().items()):
        if isinstance(value, bool):
            out[key] = "on" if value else "off"
        elif isinstance(value, list):
            out[key] = ",".join(map(str, value))
        else:
            out[key] = str(value)
    return out


def typed_args(s: Session, stmt: ast.ExecutePrepared) -> list[Expr]:
    """EXECUTE's arguments, each cast to its parameter's type (text while the statement
    is unknown: a Parse of EXECUTE may come before the PREPARE it names runs)."""
    prepared = s.prepared.get(stmt.name)
    oids = prepared.param_oids if prepared is not None else []
    return [Cast(a, oids[i]) if i < len(oids) else a for i, a in enumerate(stmt.args)]


@statement(ast.Prepare, writes=False)
async def run_prepare(s: Session, stmt: ast.Prepare, params: list[Any]) -> Result:
    if stmt.name in s.prepared:
        raise DuplicatePreparedStatement(f'prepared statement "{stmt.name}" already exists')
    oids = param_types(s, stmt.statement, stmt.param_oids)
    s.prepared[stmt.name] = Prepared(stmt.sql, stmt.statement, oids)
    return Result(None, [], "PREPARE")


@statement(
    ast.ExecutePrepared, columns=execute_columns, exprs=execute_exprs, writes=False, described=True
)
async def execute_prepared(
    s: Session, stmt: ast.ExecutePrepared, params: list[Any], columns: list[Column] | None = None
) -> Result:
    prepared = s.prepared_statement(stmt.name)
    if isinstance(prepared.stmt, ast.ExecutePrepared):
        # Only Parse can make one; running it could loop through statements forever.
        raise FeatureNotSupported(f'prepared statement "{stmt.name}" is itself an EXECUTE')
    expected, got = len(prepared.param_oids), len(stmt.args)
    if got != expected:
        raise SyntaxError_(
            f'wrong number of parameters for prepared statement "{stmt.name}"',
            detail=f"Expected {expected} parameters but got {got}.",
        )
    for arg in stmt.args:
        for node in arg.walk():
            if isinstance(node, Field):
                raise UndefinedColumn(f'column "{node.name}" does not exist')
    ctx = s.ctx(params)
    values = [arg.eval({}, ctx) for arg in typed_args(s, stmt)]
    if columns is None and isinstance(
        prepared.stmt, ast.Select | ast.Insert | ast.Update | ast.Delete
    ):
        columns = describe(s, stmt, [])  # so that $1 AS v is of $1's declared type
    return await s.execute(prepared.stmt, values, columns)


@statement(ast.Deallocate, writes=False)
async def run_deallocate(s: Session, stmt: ast.Deallocate, params: list[Any]) -> Result:
    if stmt.name is None:
        _deallocate_all(s)
        return Result(None, [], "DEALLOCATE ALL")
    s.prepared_statement(stmt.name)
    del s.prepared[stmt.name]
    return Result(None, [], "DEALLOCATE")


def _deallocate_all(s: Session) -> None:
    # The unnamed statement stays: it may be the one running this DEALLOCATE ALL,
    # and PostgreSQL keeps it apart from the named ones too.
    for name in [n for n in s.prepared if n]:
        del s.prepared[name]


@statement(ast.Discard, writes=False)
async def run_discard(s: Session, stmt: ast.Discard, params: list[Any]) -> Result:
    """DISCARD ALL forgets prepared statements, cursors and settings; the rest have nothing
    to discard here (no plan cache, temporary tables or sequences)."""
    if stmt.what != "all":
        return Result(None, [], f"DISCARD {stmt.what.upper()}")
    if s.txn is not None:
        raise ActiveSqlTransaction("DISCARD ALL cannot run inside a transaction block")
    _deallocate_all(s)
    s.cursors.clear()
    return Result(None, [], "DISCARD ALL", parameter_status=_restore_settings(s))


def _restore_settings(s: Session) -> dict[str, str]:
    """Every setting back to its value at connection start; the reported ones that
    changed, for ParameterStatus."""
    changed = {
        REPORTED_SETTINGS[name]: value
        for name, value in s._initial_settings.items()
        if name in REPORTED_SETTINGS and s.settings.get(name) != value
    }
    s.settings.clear()
    s.settings.update(s._initial_settings)
    return changed


@statement(ast.Checkpoint)
async def run_checkpoint(s: Session, stmt: ast.Checkpoint, params: list[Any]) -> Result:
    if s.user["superuser"]:
        await s.manager.checkpoint_all()
    else:
        await s.tenant.checkpoint()
    return Result(None, [], "CHECKPOINT")


@statement(ast.Empty, writes=False, implicit=True)
async def run_empty(s: Session, stmt: ast.Empty, params: list[Any]) -> Result:
    return Result(None, [], "")
