"""The live catalog as PostgreSQL's system relations, for the clients that read them.

psql's ``\\d`` family, SQLAlchemy's ``inspect()`` and JDBC's DatabaseMetaData
learn what exists from pg_class, pg_attribute, pg_index and their neighbours.
Each query gets these relations built from the session's tenant at that moment:
every collection is a relation (relkind 'r') in schema ``public``, its fields are
attributes typed as SELECT types them (SQL.md "Types on the wire"), each
secondary index is an index relation, and ``id`` (``key``) is the primary key,
with its unique index ``<collection>_pkey``. Object ids are derived, stable
for the life of a collection: 16384 + 2 x its catalog id for the table, the next
one for its key index, and 1,000,000 + 1000 x its id + n for its n-th secondary
index. The relations the catalog evaluator (catalog_query.py) already had
(pg_type, pg_range) stay static.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodedb_server import types as t
from nodedb_server.engines.base import RowCollection
from nodedb_server.engines.document import TABLE_TYPES
from nodedb_server.sql.describe import field_oid

if TYPE_CHECKING:
    from nodedb_server.sql.session import Session

Table = tuple[list[tuple[str, int]], list[tuple[Any, ...]]]
PG_CATALOG, PUBLIC, INFORMATION_SCHEMA = 11, 2200, 13000
OWNER = 10  # the superuser's role oid
DATABASE_OWNER = 6171  # pg_database_owner, which owns schema public (PostgreSQL 15)
HEAP_AM, BTREE_AM = 2, 403


def table_oid(collection_id: int) -> int:
    return 16384 + 2 * collection_id


def _cols(spec: str) -> list[tuple[str, int]]:
    """``"name:type, ..."`` with type names from types.TYPE_NAMES / CAST_NAMES."""
    out = []
    for part in spec.split(","):
        name, _, kind = part.strip().partition(":")
        oid = _BY_NAME.get(kind) or t.CAST_NAMES.get(kind)
        out.append((name, oid or (t.INT2_ARRAY if kind == "int2[]" else t.TEXT)))
    return out


_BY_NAME = {name: oid for oid, name in t.TYPE_NAMES.items()}

PG_CLASS = _cols(
    "oid:oid, relname:name, relnamespace:oid, reltype:oid, reloftype:oid, relowner:oid,"
    " relam:oid, relfilenode:oid, reltablespace:oid, relpages:int4, reltuples:float4,"
    " relallvisible:int4, reltoastrelid:oid, relhasindex:bool, relisshared:bool,"
    " relpersistence:char, relkind:char, relnatts:int2, relchecks:int2, relhasrules:bool,"
    " relhastriggers:bool, relhassubclass:bool, relrowsecurity:bool,"
    " relforcerowsecurity:bool, relispopulated:bool, relreplident:char,"
    " relispartition:bool, relacl:text, reloptions:_text, relpartbound:text"
)
PG_ATTRIBUTE = _cols(
    "attrelid:oid, attname:name, atttypid:oid, attlen:int2, attnum:int2, atttypmod:int4,"
    " attndims:int2, attnotnull:bool, atthasdef:bool, atthasmissing:bool, attidentity:char,"
    " attgenerated:char, attisdropped:bool, attislocal:bool, attinhcount:int2,"
    " attcollation:oid, attstattarget:int4, attacl:text, attoptions:text, attstorage:char,"
    " attcompression:char, attfdwoptions:text"
)
PG_INDEX = _cols(
    "indexrelid:oid, indrelid:oid, indnatts:int2, indnkeyatts:int2, indisunique:bool,"
    " indisprimary:bool, indisexclusion:bool, indimmediate:bool, indisclustered:bool,"
    " indisvalid:bool, indisready:bool, indislive:bool, indisreplident:bool,"
    " indkey:int2vector, indcollation:oidvector, indclass:oidvector, indoption:int2vector,"
    " indexprs:text,"
    " indpred:text, indnullsnotdistinct:bool"
)
PG_CONSTRAINT = _cols(
    "oid:oid, conname:name, connamespace:oid, contype:char, condeferrable:bool,"
    " condeferred:bool, convalidated:bool, conrelid:oid, contypid:oid, conindid:oid,"
    " conparentid:oid, confrelid:oid, confupdtype:char, confdeltype:char,"
    " confmatchtype:char, conislocal:bool, coninhcount:int4, connoinherit:bool,"
    " conkey:int2[], confkey:int2[], conbin:text"
)


def _empty(spec: str) -> Table:
    return _cols(spec), []


def live_tables(s: Session) -> dict[str, Table]:
    """The system relations as ``s`` sees its tenant now."""
    st = s.tenant.state
    classes, attrs, indexes, constraints, attrdefs = [], [], [], [], []
    info_tables, info_columns, info_constraints, info_keys = [], [], [], []
    tenant_db = s.database
    roles = _roles(s)
    for meta in st.active():
        engine = st.engines[meta.name]
        rel = table_oid(meta.id)
        table = engine.table if isinstance(engine, RowCollection) else None
        key = engine.key_field if isinstance(engine, RowCollection) else ""
        if isinstance(engine, RowCollection) and table is not None:
            fields = list(engine.fields())  # in declared order; a hidden key is no column
            key = "" if engine.hidden_key else key
        else:
            fields = list(engine.fields())
            fields += [f for f in getattr(engine, "typed_fields", {}) if f not in fields]
            if key and key in fields:
                fields.remove(key)
            fields = ([key] if key else []) + fields
        secondary = list(getattr(engine, "indexes", {}).values())
        sequence = getattr(engine, "sequence", None) or ""
        if sequence:  # a SERIAL key's sequence, as a relation of kind S
            classes.append(_class(3_000_000 + meta.id, sequence, "S", 3, False, 0, 0))
        classes.append(
            _class(rel, meta.name, "r", len(fields), bool(key or secondary), len(engine), HEAP_AM)
        )
        info_tables.append((tenant_db, "public", meta.name, "BASE TABLE", "YES", "NO"))
        for num, name in enumerate(fields, 1):
            oid = field_oid(engine, name)
            col = table.column(name) if table is not None else None
            not_null = name == key or (col is not None and col.not_null)
            default = default_text(col.default, col.type, sequence) if col and col.default else None
            if default is not None:
                attrdefs.append((2_000_000 + 1000 * meta.id + num, rel, num, default))
            typmod = col.typmod if col is not None else -1
            attrs.append(_attr(rel, name, oid, num, typmod, not_null, default is not None))
            info_columns.append(
                (
                    tenant_db,
                    "public",
                    meta.name,
                    name,
                    num,
                    default,
                    "NO" if not_null else "YES",
                    _info_type(oid),
                    t.TYPE_NAMES.get(oid, "text"),
                )
            )
        if key:
            pkey = rel + 1
            pk_name = f"{meta.name}_pkey"
            key_num = fields.index(key) + 1
            key_oid = field_oid(engine, key)
            classes.append(_class(pkey, pk_name, "i", 1, False, 0, BTREE_AM))
            indexes.append(_index(pkey, rel, key_num, key_oid, unique=True, primary=True))
            attrs.append(_attr(pkey, key, key_oid, 1, -1, False, False))
            constraints.append(
                (
                    pkey,
                    pk_name,
                    PUBLIC,
                    "p",
                    False,
                    False,
                    True,
                    rel,
                    0,
                    pkey,
                    0,
                    0,
                    " ",
                    " ",
                    " ",
                    True,
                    0,
                    True,
                    [key_num],
                    None,
                    None,
                )
            )
            info_constraints.append(
                (tenant_db, "public", pk_name, tenant_db, "public", meta.name, "PRIMARY KEY")
            )
            info_keys.append((tenant_db, "public", pk_name, tenant_db, "public", meta.name, key, 1))
        for n, idx in enumerate(secondary, 1):
            ioid = 1_000_000 + 1000 * meta.id + n
            attnum = fields.index(idx.field) + 1 if idx.field in fields else 0
            ioid_type = field_oid(engine, idx.field)
            classes.append(_class(ioid, idx.name, "i", 1, False, 0, BTREE_AM))
            indexes.append(_index(ioid, rel, attnum, ioid_type, unique=False, primary=False))
            attrs.append(_attr(ioid, idx.field, ioid_type, 1, -1, False, False))
    return {
        "pg_class": (PG_CLASS, classes),
        "pg_attribute": (PG_ATTRIBUTE, attrs),
        "pg_index": (PG_INDEX, indexes),
        "pg_constraint": (PG_CONSTRAINT, constraints),
        "pg_namespace": (
            _cols("oid:oid, nspname:name, nspowner:oid, nspacl:text"),
            [
                (PG_CATALOG, "pg_catalog", OWNER, None),
                (PUBLIC, "public", DATABASE_OWNER, None),
                (INFORMATION_SCHEMA, "information_schema", OWNER, None),
            ],
        ),
        "pg_am": (
            _cols("oid:oid, amname:name, amhandler:text, amtype:char"),
            [(HEAP_AM, "heap", "heap_tableam_handler", "t"), (BTREE_AM, "btree", "bthandler", "i")],
        ),
        "pg_database": (
            _cols(
                "oid:oid, datname:name, datdba:oid, encoding:int4, datlocprovider:char,"
                " datistemplate:bool, datallowconn:bool, datconnlimit:int4, datcollate:text,"
                " datctype:text, daticulocale:text, datacl:text, dattablespace:oid"
            ),
            [
                (
                    1 + 16000 + n,
                    name,
                    OWNER,
                    6,
                    "c",
                    False,
                    True,
                    -1,
                    "C.UTF-8",
                    "C.UTF-8",
                    None,
                    None,
                    1663,
                )
                for n, name in enumerate([s.database])
            ],
        ),
        "pg_roles": (_ROLES, roles),
        "pg_user": (
            _cols(
                "usename:name, usesysid:oid, usecreatedb:bool, usesuper:bool, userepl:bool,"
                " usebypassrls:bool, passwd:text, valuntil:timestamptz, useconfig:text"
            ),
            [(r[1], r[0], r[5], r[2], False, False, "********", None, None) for r in roles if r[6]],
        ),
        "pg_auth_members": _empty("roleid:oid, member:oid, grantor:oid, admin_option:bool"),
        "pg_proc": _empty(
            "oid:oid, proname:name, pronamespace:oid, proowner:oid, prokind:char,"
            " prorettype:oid, proargtypes:text, proretset:bool, provolatile:char,"
            " proparallel:char, prosecdef:bool, proleakproof:bool, prolang:oid, proacl:text"
        ),
        "pg_description": _empty("objoid:oid, classoid:oid, objsubid:int4, description:text"),
        "pg_shdescription": _empty("objoid:oid, classoid:oid, description:text"),
        "pg_attrdef": (_cols("oid:oid, adrelid:oid, adnum:int2, adbin:text"), attrdefs),
        "pg_inherits": _empty("inhrelid:oid, inhparent:oid, inhseqno:int4, inhdetachpending:bool"),
        "pg_collation": _empty("oid:oid, collname:name, collnamespace:oid"),
        "pg_opclass": (  # the operator class of each index (pg_index.indclass)
            _cols(
                "oid:oid, opcmethod:oid, opcname:name, opcnamespace:oid, opcowner:oid,"
                " opcfamily:oid, opcintype:oid, opcdefault:bool, opckeytype:oid"
            ),
            [
                (opc, BTREE_AM, name, PG_CATALOG, OWNER, 0, oid, True, 0)
                for oid, (opc, name) in _OPCLASS_NAMES.items()
            ],
        ),
        "pg_extension": _empty(
            "oid:oid, extname:name, extowner:oid, extnamespace:oid, extversion:text"
        ),
        "pg_tablespace": (
            _cols("oid:oid, spcname:name, spcowner:oid"),
            [(1663, "pg_default", OWNER)],
        ),
        "pg_policy": _empty(
            "oid:oid, polname:name, polrelid:oid, polcmd:char, polpermissive:bool,"
            " polroles:oid[], polqual:text, polwithcheck:text"
        ),
        "pg_trigger": _empty(
            "oid:oid, tgrelid:oid, tgname:name, tgisinternal:bool, tgenabled:char"
        ),
        "pg_rewrite": _empty("oid:oid, rulename:name, ev_class:oid"),
        "pg_statistic_ext": _empty(
            "oid:oid, stxrelid:oid, stxname:name, stxnamespace:oid, stxowner:oid,"
            " stxstattarget:int4, stxkeys:int2vector, stxkind:text"
        ),
        "pg_publication": _empty("oid:oid, pubname:name"),
        "pg_publication_rel": _empty("oid:oid, prpubid:oid, prrelid:oid"),
        "pg_foreign_table": _empty("ftrelid:oid, ftserver:oid"),
        "pg_sequence": _empty("seqrelid:oid, seqtypid:oid"),
        "pg_depend": _empty(
            "classid:oid, objid:oid, objsubid:int4, refclassid:oid, refobjid:oid,"
            " refobjsubid:int4, deptype:char"
        ),
        "pg_settings": (
            _cols(
                "name:text, setting:text, unit:text, category:text, short_desc:text,"
                " context:text, vartype:text, source:text"
            ),
            [(k, v, None, "", "", "user", "string", "session") for k, v in s.settings.items()]
            + [(k, v, None, "", "", "internal", "integer", "default") for k, v in _FIXED],
        ),
        "information_schema.schemata": (
            _cols("catalog_name:name, schema_name:name, schema_owner:name"),
            [(tenant_db, n, "nodedb") for n in ("pg_catalog", "public", "information_schema")],
        ),
        "information_schema.tables": (
            _cols(
                "table_catalog:name, table_schema:name, table_name:name, table_type:text,"
                " is_insertable_into:text, is_typed:text"
            ),
            info_tables,
        ),
        "information_schema.columns": (
            _cols(
                "table_catalog:name, table_schema:name, table_name:name, column_name:name,"
                " ordinal_position:int4, column_default:text, is_nullable:text,"
                " data_type:text, udt_name:name"
            ),
            info_columns,
        ),
        "information_schema.table_constraints": (
            _cols(
                "constraint_catalog:name, constraint_schema:name, constraint_name:name,"
                " table_catalog:name, table_schema:name, table_name:name,"
                " constraint_type:text"
            ),
            info_constraints,
        ),
        "information_schema.key_column_usage": (
            _cols(
                "constraint_catalog:name, constraint_schema:name, constraint_name:name,"
                " table_catalog:name, table_schema:name, table_name:name, column_name:name,"
                " ordinal_position:int4"
            ),
            info_keys,
        ),
    }


# Settings fixed at build time, as pg_settings shows them (JDBC reads max_index_keys).
_FIXED = [("max_index_keys", "32"), ("max_identifier_length", "63"), ("block_size", "8192")]
# The operator class an index of a column of each type uses (pg_index.indclass), and
# whether the type is collatable (pg_index.indcollation: the default collation, 100).
_OPCLASS = {
    t.INT8: 3124,
    t.INT4: 1978,
    t.INT2: 1976,
    t.FLOAT8: 3123,
    t.FLOAT4: 1970,
    t.NUMERIC: 3125,
    t.BOOL: 424,
    t.TEXT: 3126,
    t.VARCHAR: 3126,
    t.BYTEA: 428,
    t.TIMESTAMPTZ: 3127,
    t.TIMESTAMP: 3128,
}
_OPCLASS_NAMES = {
    oid: (opc, f"{'text' if oid == t.VARCHAR else t.TYPE_NAMES[oid]}_ops")
    for oid, opc in _OPCLASS.items()
    if oid != t.VARCHAR  # varchar columns use text_ops
}
_COLLATABLE = frozenset({t.TEXT, t.VARCHAR})
DEFAULT_COLLATION = 100

_ROLES = _cols(
    "oid:oid, rolname:name, rolsuper:bool, rolinherit:bool, rolcreaterole:bool,"
    " rolcreatedb:bool, rolcanlogin:bool, rolreplication:bool, rolconnlimit:int4,"
    " rolpassword:text, rolvaliduntil:timestamptz, rolbypassrls:bool, rolconfig:text"
)


def _roles(s: Session) -> list[tuple[Any, ...]]:
    """The session's own role (a tenant's user sees only itself), and the built-in
    pg_database_owner, which owns schema public."""
    name = str(s.user.get("name", "nodedb"))
    superuser = bool(s.user.get("superuser", name == "nodedb"))
    owner = (DATABASE_OWNER, "pg_database_owner", False, True, False, False, False, False)
    return [
        (*owner, -1, None, None, False, None),
        (
            OWNER,
            name,
            superuser,
            True,
            superuser,
            superuser,
            True,
            False,
            -1,
            "********",
            None,
            False,
            None,
        ),
    ]


def default_text(default: dict[str, Any], kind: str, sequence: str = "") -> str:
    """A column's DEFAULT as pg_get_expr shows it: now(), 1, 'x'::text, a SERIAL's
    nextval('t_id_seq'::regclass)."""
    if default.get("serial"):
        return f"nextval('{sequence}'::regclass)"
    if default.get("now"):
        return "now()"
    v = default["value"]
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return t.encode_text(t.FLOAT8 if isinstance(v, float) else t.INT8, v)
    text = t.encode_text(TABLE_TYPES[kind], v).replace("'", "''")
    return f"'{text}'::{t.TYPE_NAMES[TABLE_TYPES[kind]]}"


def _class(
    oid: int, name: str, kind: str, natts: int, hasindex: bool, rows: int, am: int
) -> tuple[Any, ...]:
    return (
        oid,
        name,
        PUBLIC,
        0,
        0,
        OWNER,
        am,
        oid,
        0,
        0,
        float(rows),
        0,
        0,
        hasindex,
        False,
        "p",
        kind,
        natts,
        0,
        False,
        False,
        False,
        False,
        False,
        True,
        "n" if kind == "i" else "d",  # PostgreSQL: indexes have no replica identity
        False,
        None,
        None,
        None,
    )


def _attr(
    rel: int, name: str, oid: int, num: int, typmod: int, not_null: bool, has_default: bool
) -> tuple[Any, ...]:
    """A pg_attribute row: a column of a table, or of an index (its indexed column)."""
    size = t.TYPE_SIZES.get(oid, -1)
    return (
        rel,
        name,
        oid,
        size,
        num,
        typmod,
        0,
        not_null,
        has_default,
        False,
        "",
        "",
        False,
        True,
        0,
        DEFAULT_COLLATION if oid in _COLLATABLE else 0,
        -1,
        None,
        None,
        "p" if size > 0 else "x",
        "",
        None,
    )


def _index(
    oid: int, rel: int, key: int, key_type: int, unique: bool, primary: bool
) -> tuple[Any, ...]:
    return (
        oid,
        rel,
        1,
        1,
        unique,
        primary,
        False,
        True,
        False,
        True,
        True,
        True,
        False,
        [key],
        [DEFAULT_COLLATION if key_type in _COLLATABLE else 0],
        [_OPCLASS.get(key_type, 0)],
        [0],
        None,
        None,
        False,
    )


def _info_type(oid: int) -> str:
    return {
        t.INT8: "bigint",
        t.INT4: "integer",
        t.INT2: "smallint",
        t.FLOAT8: "double precision",
        t.FLOAT4: "real",
        t.BOOL: "boolean",
        t.TEXT: "text",
        t.VARCHAR: "character varying",
        t.BYTEA: "bytea",
        t.TIMESTAMPTZ: "timestamp with time zone",
        t.TIMESTAMP: "timestamp without time zone",
        t.JSONB: "jsonb",
        t.FLOAT4_ARRAY: "ARRAY",
    }.get(oid, t.TYPE_NAMES.get(oid, "text"))
