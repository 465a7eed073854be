"""Queries over pg_catalog: a small relational evaluator for what drivers ask at run time.

asyncpg, before it sends an array parameter (float4[], text[] ...), looks the
type up with a recursive query over pg_type, pg_namespace, pg_range,
pg_attribute and pg_class. Rather than recognise that query's text, this
module answers that kind of SQL: joins (inner, left, comma), derived tables,
WITH [RECURSIVE] ... UNION [ALL], scalar subqueries, CASE, COALESCE,
array_agg, ``= any(array)``, DISTINCT, ORDER BY, LIMIT and the casts the
catalog needs (::oid[], ::regtype, ::text), over small in-memory tables.
Written here because sqlglot's own executor does not run recursive CTEs.

Every column has a static type, so a statement can be described (Describe)
before it runs, as the extended protocol requires.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import TokenType

from nodedb_server import types as t
from nodedb_server.errors import DataError, FeatureNotSupported, SyntaxError_, UndefinedTable

Rows = list[tuple[Any, ...]]
Tables = dict[str, tuple[list[tuple[str, int]], Rows]]
Scope = dict[str, dict[str, Any]]  # alias -> column -> value
TScope = dict[str, dict[str, int]]  # alias -> column -> type OID


class CatalogDialect(Postgres):
    """PostgreSQL as sqlglot reads it, except that ``oid`` is an ordinary type, so that
    ``$1::oid[]`` parses (sqlglot otherwise takes oid for a reg* identifier)."""

    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS = {**Postgres.Tokenizer.KEYWORDS, "OID": TokenType.UINT}

    class Parser(Postgres.Parser):  # type: ignore[misc, valid-type]  # an alias in sqlglot 30
        def _parse_types(self, *args: Any, **kwargs: Any) -> exp.Expr | None:
            """Arrays of a reg* type too: pgcli's functions query casts
            ``proargtypes::regtype[]``, and sqlglot reads ``regtype`` as a type but returns
            before its ``[]``."""
            this = super()._parse_types(*args, **kwargs)
            if isinstance(this, exp.ObjectIdentifier):
                while self._match_pair(TokenType.L_BRACKET, TokenType.R_BRACKET):
                    this = exp.DataType(
                        this=exp.DataType.Type.ARRAY, expressions=[this], nested=True
                    )
            return this


def _type_rows() -> list[tuple[Any, ...]]:
    rows = []
    for oid, name in sorted(t.TYPE_NAMES.items()):
        elem = t.ARRAY_ELEMENT.get(t.VECTOR_ARRAYS.get(oid, oid), 0)
        length = t.TYPE_SIZES.get(oid, -1)
        collation = 100 if oid in t.TEXTLIKE else 0
        array = next((a for a, e in t.ARRAY_ELEMENT.items() if e == oid), 0)
        rows.append((oid, name, 11, "b", 0, elem, length, ",", 0, collation, array, 10, False, -1))
    return rows


# name -> ([(column, type OID)], rows)
TABLES: dict[str, tuple[list[tuple[str, int]], Rows]] = {
    "pg_type": (
        [
            ("oid", t.OID),
            ("typname", t.NAME),
            ("typnamespace", t.OID),
            ("typtype", t.CHAR),
            ("typbasetype", t.OID),
            ("typelem", t.OID),
            ("typlen", t.INT2),
            ("typdelim", t.CHAR),
            ("typrelid", t.OID),
            ("typcollation", t.OID),
            ("typarray", t.OID),
            ("typowner", t.OID),
            ("typnotnull", t.BOOL),
            ("typtypmod", t.INT4),
        ],
        _type_rows(),
    ),
    "pg_namespace": ([("oid", t.OID), ("nspname", t.NAME)], [(11, "pg_catalog"), (2200, "public")]),
    "pg_range": ([("rngtypid", t.OID), ("rngsubtype", t.OID), ("rngmultitypid", t.OID)], []),
    "pg_attribute": (
        [
            ("attrelid", t.OID),
            ("attname", t.NAME),
            ("atttypid", t.OID),
            ("attnum", t.INT2),
            ("attisdropped", t.BOOL),
        ],
        [],
    ),
    "pg_class": ([("oid", t.OID), ("relname", t.NAME), ("reltype", t.OID)], []),
}
_NAME_BY_OID = {oid: name for oid, name in t.TYPE_NAMES.items()}
_OID_BY_NAME = {name: oid for oid, name in t.TYPE_NAMES.items()}
_ARRAY_OF = {elem: arr for arr, elem in t.ARRAY_ELEMENT.items()}
MAX_RECURSION = 100


CATALOG_SCHEMAS = ("pg_catalog", "information_schema")
# Relations built from the live catalog per query (sql/pg_catalog.py).
LIVE = frozenset(
    [
        "pg_class",
        "pg_attribute",
        "pg_index",
        "pg_constraint",
        "pg_namespace",
        "pg_am",
        "pg_database",
        "pg_roles",
        "pg_user",
        "pg_auth_members",
        "pg_proc",
        "pg_description",
        "pg_shdescription",
        "pg_attrdef",
        "pg_inherits",
        "pg_collation",
        "pg_opclass",
        "pg_extension",
        "pg_tablespace",
        "pg_policy",
        "pg_trigger",
        "pg_rewrite",
        "pg_statistic_ext",
        "pg_publication",
        "pg_publication_rel",
        "pg_foreign_table",
        "pg_sequence",
        "pg_depend",
        "pg_settings",
    ]
)
NAMES = frozenset(TABLES) | LIVE


def reads_catalog(tree: exp.Expr) -> bool:
    """Whether a parsed query reads a catalog relation: one in pg_catalog or
    information_schema, or a bare name of ours (pg_type) that no WITH of the query defines.
    Judged by the relations the query names, never by its text, so that a collection
    ``apg_typed`` or a string 'pg_class' is not taken for the catalog."""
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    return any(
        table.db.lower() in CATALOG_SCHEMAS
        or (not table.db and table.name in NAMES and table.name not in ctes)
        for table in tree.find_all(exp.Table)
    )


# Every relation reads_catalog accepts is named by one of these words (schemas in any
# case, as it compares them; our bare names as written), so a text without one is not
# worth reading with CatalogDialect on the chance that it is a catalog query.
_CATALOG_WORDS = re.compile(
    "|".join(
        [rf"(?i:\b{re.escape(schema)}\b)" for schema in CATALOG_SCHEMAS]
        + [rf"\b{re.escape(name)}\b" for name in sorted(NAMES)]
    )
)


def names_catalog(sql: str) -> bool:
    """Whether ``sql`` names a word that could be a catalog relation: a query that does is
    worth parsing with CatalogDialect first (it may still not read the catalog: 'pg_type'
    in a string)."""
    return _CATALOG_WORDS.search(sql) is not None


def reads_as_postgres(sql: str) -> bool:
    """Whether CatalogDialect reads ``sql`` into the tree PostgreSQL's dialect gives: they
    differ only in the word oid."""
    return "oid" not in sql.lower()


def parse(sql: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(sql, read=CatalogDialect)
        assert isinstance(tree, exp.Expression)
        # Unquoted names fold to lower case, as PostgreSQL folds them (JDBC's TABLE_CAT
        # is the column table_cat; a quoted "TABLE_SCHEM" keeps its case).
        return normalize_identifiers(tree, dialect=CatalogDialect)
    except sqlglot.errors.SqlglotError as e:
        raise SyntaxError_(f"syntax error: {str(e).splitlines()[0][:200]}") from None


class Query:
    """One parsed catalog query: describe it, then run it with parameter values."""

    def __init__(self, tree: exp.Expression):
        self.tree = tree

    def columns(self, param_oids: list[int], tables: Tables | None = None) -> list[tuple[str, int]]:
        names, types, _ = Evaluator(
            [None] * len(param_oids), param_oids, typing_only=True, tables=tables
        ).query(self.tree, {}, {}, {})
        return list(zip(names, types, strict=True))

    def run(
        self, params: list[Any], param_oids: list[int], tables: Tables | None = None
    ) -> tuple[list[tuple[str, int]], Rows]:
        names, types, rows = Evaluator(params, param_oids, tables=tables).query(
            self.tree, {}, {}, {}
        )
        return list(zip(names, types, strict=True)), rows

    def param_count(self) -> int:
        return max((int(p.this.this) for p in self.tree.find_all(exp.Parameter)), default=0)

    def param_types(self) -> list[int]:
        """A parameter takes the type of its cast (``$1::oid[]``), else text."""
        oids = [t.TEXT] * self.param_count()
        for cast in self.tree.find_all(exp.Cast):
            if isinstance(cast.this, exp.Parameter):
                oids[int(cast.this.this.this) - 1] = _cast_oid(cast.to)
        return oids


def _cast_oid(to: exp.Expression) -> int:
    kind = _reg_kind(to)
    if kind is not None:
        return {"regtype": t.REGTYPE, "regclass": t.REGCLASS}.get(kind, t.OID)
    assert isinstance(to, exp.DataType)
    if to.this == exp.DataType.Type.ARRAY:
        return _ARRAY_OF.get(_cast_oid(to.expressions[0]), t.TEXT_ARRAY)
    name = to.sql(CatalogDialect).lower()
    if name in ("uint", "oid"):
        return t.OID
    return t.CAST_NAMES.get(name, t.TEXT)


class Evaluator:
    def __init__(
        self,
        params: list[Any],
        param_oids: list[int],
        typing_only: bool = False,
        tables: Tables | None = None,
    ):
        self.params = params
        self.param_oids = param_oids
        self.typing_only = typing_only
        self.tables: Tables = {**TABLES, **(tables or {})}

    # ---- queries -----------------------------------------------------------------------------

    def query(
        self, node: exp.Expression, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> tuple[list[str], list[int], Rows]:
        if isinstance(node, exp.Subquery):
            return self.query(node.this, ctes, outer, outer_types)
        if isinstance(node, exp.Union):
            ln, lt, lrows = self.query(node.this, ctes, outer, outer_types)
            _, _, rrows = self.query(node.expression, ctes, outer, outer_types)
            rows = lrows + rrows
            return ln, lt, (_distinct(rows) if node.args.get("distinct") else rows)
        if not isinstance(node, exp.Select):
            raise FeatureNotSupported(f"{type(node).__name__} is not supported over pg_catalog")
        ctes = self._ctes(node, ctes, outer, outer_types)
        sources = self._sources(node, ctes, outer, outer_types)
        types: TScope = {
            **outer_types,
            **{a: dict(zip(n, ty, strict=True)) for a, n, ty, _ in sources},
        }
        scopes = list(self._join(node, sources, outer, types))
        where = node.args.get("where")
        if where is not None and not self.typing_only:
            scopes = [s for s in scopes if self.value(where.this, s, ctes, types) is True]
        order = node.args.get("order")
        names = [e.alias_or_name for e in node.expressions]
        if order is not None and not self.typing_only and not node.args.get("distinct"):
            # an ORDER BY expression that is not an output column is read from each row
            for o in reversed(order.expressions):
                if _output_position(o.this, names) is None:
                    keyed = [(_sortable(self.value(o.this, sc, ctes, types)), sc) for sc in scopes]
                    keyed.sort(key=lambda p: p[0], reverse=bool(o.args.get("desc")))
                    scopes = [sc for _, sc in keyed]
        names, out_types, rows = self._project(node, sources, scopes, ctes, types)
        if node.args.get("distinct"):
            rows = _distinct(rows)
        if order is not None and not self.typing_only:
            for o in reversed(order.expressions):
                pos = _output_position(o.this, names)
                if pos is None:
                    if node.args.get("distinct"):
                        _position(o.this, names)  # refused
                    continue
                rows.sort(key=_column_key(pos), reverse=bool(o.args.get("desc")))
        limit = node.args.get("limit")
        if limit is not None:
            rows = rows[: int(limit.expression.this)]
        return names, out_types, rows

    def _ctes(
        self, node: exp.Select, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> dict[str, Any]:
        with_ = node.args.get("with_") or node.args.get("with")
        if with_ is None:
            return ctes
        ctes = dict(ctes)
        for cte in with_.expressions:
            name = cte.alias
            cols = [c.name for c in cte.args["alias"].columns] if cte.args.get("alias") else []
            body = cte.this
            if with_.args.get("recursive") and isinstance(body, exp.Union):
                n, ty, seed = self.query(body.this, ctes, outer, outer_types)
                cols = cols or n
                result, delta = list(seed), seed
                for _ in range(MAX_RECURSION):
                    ctes[name] = (cols, ty, delta)
                    _, _, new = self.query(body.expression, ctes, outer, outer_types)
                    if not new or self.typing_only:
                        break
                    result += new
                    delta = new
                ctes[name] = (cols, ty, result)
            else:
                n, ty, rows = self.query(body, ctes, outer, outer_types)
                ctes[name] = (cols or n, ty, rows)
        return ctes

    def _source(
        self, node: exp.Expression, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> tuple[str, list[str], list[int], Rows]:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.ExplodingGenerateSeries):
            return self._series(node, ctes, outer, outer_types)
        if isinstance(node, exp.Table):
            name = node.name
            alias = node.alias or name
            if name in ctes and not node.args.get("db"):
                cols, ty, rows = ctes[name]
                return alias, cols, ty, rows
            db = node.db.lower()
            table = self.tables.get(f"{db}.{name}" if db == "information_schema" else name)
            if table is None and (db == "pg_catalog" or not name) and name not in TABLES:
                # a system relation or set-returning function for what we do not have
                # (publications, rules, policies...): it holds no rows
                return alias or "?", [], [], []
            if table is None:
                raise UndefinedTable(f'relation "{name}" does not exist')
            cols_types, rows = table
            return alias, [c for c, _ in cols_types], [o for _, o in cols_types], rows
        if isinstance(node, exp.Subquery):
            n, ty, rows = self.query(node.this, ctes, outer, outer_types)
            return node.alias, n, ty, rows
        if isinstance(node, exp.Unnest) and _uncorrelated_unnest(node):
            return self._unnest(node, ctes, outer, outer_types)
        if isinstance(node, exp.Lateral | exp.Unnest | exp.Func):
            return node.alias_or_name or "?", [], [], []  # set-returning functions: no rows
        raise FeatureNotSupported(f"{type(node).__name__} is not supported in FROM over pg_catalog")

    def _series(
        self, node: exp.Table, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> tuple[str, list[str], list[int], Rows]:
        """``FROM generate_series(start, stop[, step]) [alias(col)]``: int4 rows (JDBC's
        getImportedKeys numbers key positions with one)."""
        gen = node.this
        alias = node.args.get("alias")
        table = alias.name if alias is not None and alias.name else "generate_series"
        column = alias.columns[0].name if alias is not None and alias.columns else table
        if self.typing_only:
            return table, [column], [t.INT4], []
        start, end, step = (
            self.value(gen.args[k], outer, ctes, outer_types) if gen.args.get(k) else None
            for k in ("start", "end", "step")
        )
        if start is None or end is None:
            return table, [column], [t.INT4], []
        step = int(step) if step is not None else 1
        if step == 0:
            raise DataError("step size cannot equal zero", sqlstate="22023")
        stop = int(end) + (1 if step > 0 else -1)
        return table, [column], [t.INT4], [(v,) for v in range(int(start), stop, step)]

    def _unnest(
        self, node: exp.Unnest, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> tuple[str, list[str], list[int], Rows]:
        """``FROM unnest(array)`` of an array that reads no column, as pgcli's search path
        query ``SELECT * FROM unnest(current_schemas(true))``: a row per element, in a
        column named as PostgreSQL names it (unnest, the alias, or the alias's column)."""
        arg = node.expressions[0]
        arr = self.type_of(arg, outer_types)
        elem = t.ARRAY_ELEMENT.get(t.VECTOR_ARRAYS.get(arr, arr), t.TEXT)
        alias = node.args.get("alias")
        table = alias.name if alias is not None and alias.name else "unnest"
        column = alias.columns[0].name if alias is not None and alias.columns else table
        values = None if self.typing_only else self.value(arg, outer, ctes, outer_types)
        rows = [(v,) for v in values] if isinstance(values, list) else []
        return table, [column], [elem], rows

    def _sources(
        self, node: exp.Select, ctes: dict[str, Any], outer: Scope, outer_types: TScope
    ) -> list[tuple[str, list[str], list[int], Rows]]:
        frm = node.args.get("from_") or node.args.get("from")
        if frm is None:
            return []
        out = [self._source(frm.this, ctes, outer, outer_types)]
        for join in node.args.get("joins") or []:
            out.append(self._source(join.this, ctes, outer, outer_types))
        return out

    def _join(
        self,
        node: exp.Select,
        sources: list[tuple[str, list[str], list[int], Rows]],
        outer: Scope,
        types: TScope,
    ) -> Iterator[Scope]:
        if not sources:
            yield dict(outer)
            return
        if self.typing_only:
            return  # describing: the types are known from the sources, no row is needed
        # The WHERE's conjuncts, each applied as soon as the relations it reads are joined:
        # JDBC's getImportedKeys joins nine relations with commas, whose whole product is
        # tens of millions of rows. (The whole WHERE is still applied afterwards.)
        # A correlated subquery's conditions on the outer row count too: asyncpg's type
        # introspection reads a relation's attributes with c.reltype = t.oid.
        pending = _pushable_conjuncts(node, {a for a, *_ in sources} | set(outer))
        bound = set(outer)

        def filtered(scopes: list[Scope], alias: str) -> list[Scope]:
            bound.add(alias)
            ready = [c for c, needs in pending if needs <= bound]
            pending[:] = [(c, needs) for c, needs in pending if not needs <= bound]
            for cond in ready:
                scopes = [sc for sc in scopes if self.value(cond, sc, {}, types) is True]
            return scopes

        alias, cols, _, rows = sources[0]
        scopes = filtered([{**outer, alias: dict(zip(cols, r, strict=True))} for r in rows], alias)
        for join, (alias, cols, _, rows) in zip(
            node.args.get("joins") or [], sources[1:], strict=True
        ):
            on = join.args.get("on")
            left = join.args.get("side") == "LEFT"
            probe = _equi_probe(on, alias, cols) if on is not None else None
            hashed = _HashedRows(rows, cols.index(probe[1])) if probe is not None else None
            nxt = []
            for s in scopes:
                matched = False
                candidates = rows
                if probe is not None and hashed is not None:
                    candidates = hashed.matching(self.value(probe[0], s, {}, types))
                for r in candidates:
                    candidate = {**s, alias: dict(zip(cols, r, strict=True))}
                    if on is None or self.value(on, candidate, {}, types) is True:
                        nxt.append(candidate)
                        matched = True
                if left and not matched:
                    nxt.append({**s, alias: dict.fromkeys(cols) if cols else _NullRow()})
            scopes = filtered(nxt, alias)
        yield from scopes

    def _project(
        self,
        node: exp.Select,
        sources: list[tuple[str, list[str], list[int], Rows]],
        scopes: list[Scope],
        ctes: dict[str, Any],
        types: TScope,
    ) -> tuple[list[str], list[int], Rows]:
        items: list[tuple[str, exp.Expression | None, str | None, str | None]] = []
        for e in node.expressions:
            if isinstance(e, exp.Star):
                items += [(c, None, a, c) for a, cols, _, _ in sources for c in cols]
            else:
                inner = e.this if isinstance(e, exp.Alias) else e
                items.append((_output_name(e), inner, None, None))
        out_types = [
            types[a][c] if e is None else self.type_of(e, types)  # type: ignore[index]
            for _, e, a, c in items
        ]
        names = [n for n, *_ in items]
        if self.typing_only:
            return names, out_types, []
        group = node.args.get("group")
        if group is not None:
            groups: dict[tuple[Any, ...], list[Scope]] = {}
            for sc in scopes:
                key = tuple(_hashable(self.value(g, sc, ctes, types)) for g in group.expressions)
                groups.setdefault(key, []).append(sc)
            grouped = []
            for members in groups.values():
                grouped.append(
                    tuple(
                        members[0][a][c]  # type: ignore[index]
                        if e is None
                        else self._aggregate(e, members, ctes, types)
                        if _has_aggregate(e)
                        else self.value(e, members[0], ctes, types)
                        for _, e, a, c in items
                    )
                )
            return names, out_types, grouped
        aggregate = any(e is not None and _has_aggregate(e) for _, e, _, _ in items)
        if aggregate:
            row = tuple(self._aggregate(e, scopes, ctes, types) for _, e, _, _ in items)  # type: ignore[arg-type]
            return names, out_types, [row]
        windows = {
            k: self._window(e, scopes, ctes, types)
            for k, (_, e, _, _) in enumerate(items)
            if isinstance(e, exp.Window)
        }
        rows = [
            tuple(
                windows[k][i]
                if k in windows
                else s[a][c]  # type: ignore[index]
                if e is None
                else self.value(e, s, ctes, types)
                for k, (_, e, a, c) in enumerate(items)
            )
            for i, s in enumerate(scopes)
        ]
        if any(isinstance(v, _Set) for r in rows[:1] for v in r):
            rows = [x for r in rows for x in _expand(r)]
        return names, out_types, rows

    def _window(
        self, e: exp.Window, scopes: list[Scope], ctes: dict[str, Any], types: TScope
    ) -> list[Any]:
        """row_number() / rank() OVER (PARTITION BY .. ORDER BY ..), for each scope."""
        fn = e.this
        if not isinstance(fn, exp.RowNumber | exp.Anonymous) or (
            isinstance(fn, exp.Anonymous) and str(fn.this).lower() not in ("rank", "dense_rank")
        ):
            raise FeatureNotSupported(f"{fn.sql()[:40]} is not supported as a window here")
        parts = [p for p in e.args.get("partition_by") or []]
        order = e.args.get("order")
        orders = order.expressions if order is not None else []
        keyed = []
        for i, sc in enumerate(scopes):
            pk = tuple(_hashable(self.value(p, sc, ctes, types)) for p in parts)
            ok = [_sortable(self.value(o.this, sc, ctes, types)) for o in orders]
            keyed.append((pk, ok, i))
        out: list[Any] = [None] * len(scopes)
        groups: dict[tuple[Any, ...], list[tuple[list[Any], int]]] = {}
        for pk, ok, i in keyed:
            groups.setdefault(pk, []).append((ok, i))
        for members in groups.values():
            for pos, o in reversed(list(enumerate(orders))):
                members.sort(key=_nth_key(pos), reverse=bool(o.args.get("desc")))
            rank = dense = 0
            prev: Any = object()
            for n, (ok, i) in enumerate(members, 1):
                if ok != prev:
                    rank, dense, prev = n, dense + 1, ok
                if isinstance(fn, exp.RowNumber):
                    out[i] = n
                else:
                    out[i] = rank if str(fn.this).lower() == "rank" else dense
        return out

    def _aggregate(
        self, e: exp.Expression, scopes: list[Scope], ctes: dict[str, Any], types: TScope
    ) -> Any:
        if isinstance(e, exp.Count):
            arg = e.this
            if arg is None or isinstance(arg, exp.Star):
                return len(scopes)
            return sum(1 for sc in scopes if self.value(arg, sc, ctes, types) is not None)
        if isinstance(e, exp.Min | exp.Max | exp.LogicalAnd | exp.LogicalOr):
            vals = [v for sc in scopes if (v := self.value(e.this, sc, ctes, types)) is not None]
            if not vals:
                return None
            if isinstance(e, exp.LogicalAnd):
                return all(vals)
            if isinstance(e, exp.LogicalOr):
                return any(vals)
            return min(vals) if isinstance(e, exp.Min) else max(vals)
        if isinstance(e, exp.ArrayAgg):
            arg = e.this
            if isinstance(arg, exp.Order):
                pairs = [(s, self.value(arg.this, s, ctes, types)) for s in scopes]
                for o in reversed(arg.expressions):  # stable sorts, last key first
                    keys = [_sortable(self.value(o.this, sc, ctes, types)) for sc, _ in pairs]
                    order = sorted(
                        range(len(pairs)), key=keys.__getitem__, reverse=bool(o.args.get("desc"))
                    )
                    pairs = [pairs[k] for k in order]
                values = [v for _, v in pairs]
            else:
                values = [self.value(arg, s, ctes, types) for s in scopes]
            return values or None
        raise FeatureNotSupported(f"{e.sql()[:40]} is not supported as an aggregate here")

    # ---- expressions ------------------------------------------------------------------------

    def value(self, e: exp.Expression, s: Scope, ctes: dict[str, Any], types: TScope) -> Any:
        if isinstance(e, exp.Paren):
            return self.value(e.this, s, ctes, types)
        if isinstance(e, exp.Column):
            return _column(e, s)
        if isinstance(e, exp.Literal):
            return e.this if e.is_string else (float(e.this) if "." in e.this else int(e.this))
        if isinstance(e, exp.Null):
            return None
        if isinstance(e, exp.Boolean):
            return bool(e.this)
        if isinstance(e, exp.Parameter):
            return self.params[int(e.this.this) - 1]
        if isinstance(e, exp.And | exp.Or):
            a, b = self.value(e.this, s, ctes, types), self.value(e.expression, s, ctes, types)
            if isinstance(e, exp.And):
                return (
                    False
                    if a is False or b is False
                    else (None if a is None or b is None else True)
                )
            return True if a is True or b is True else (None if a is None or b is None else False)
        if isinstance(e, exp.Not):
            v = self.value(e.this, s, ctes, types)
            return None if v is None else not v
        if isinstance(e, exp.Is):
            v = self.value(e.this, s, ctes, types) is None
            return (not v) if e.args.get("negate") else v
        if isinstance(e, exp.In):
            v = self.value(e.this, s, ctes, types)
            if e.args.get("query") is not None:
                _, _, rows = self.query(e.args["query"].this, ctes, s, types)
                options = [r[0] for r in rows]
            else:
                options = [self.value(i, s, ctes, types) for i in e.expressions]
            found = v is not None and any(_same(v, o) for o in options)
            return (not found) if e.args.get("negate") else found
        if isinstance(e, exp.EQ) and isinstance(e.expression, exp.Any):
            v = self.value(e.this, s, ctes, types)
            arr = self.value(e.expression.this, s, ctes, types)
            return None if v is None or arr is None else v in arr
        if isinstance(e, exp.EQ | exp.NEQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
            a, b = self.value(e.this, s, ctes, types), self.value(e.expression, s, ctes, types)
            if a is None or b is None:
                return None
            a, b = _comparable(a, b)
            op = {
                exp.EQ: "__eq__",
                exp.NEQ: "__ne__",
                exp.GT: "__gt__",
                exp.GTE: "__ge__",
                exp.LT: "__lt__",
                exp.LTE: "__le__",
            }[type(e)]
            return bool(getattr(a, op)(b))
        if isinstance(e, exp.Add | exp.Sub | exp.Mul | exp.BitwiseAnd | exp.BitwiseOr | exp.Mod):
            a, b = self.value(e.this, s, ctes, types), self.value(e.expression, s, ctes, types)
            if a is None or b is None:
                return None
            return _ARITH[type(e)](a, b)
        if isinstance(e, exp.Neg):
            v = self.value(e.this, s, ctes, types)
            return None if v is None else -v
        if isinstance(e, exp.Case):
            operand = e.this
            subject = self.value(operand, s, ctes, types) if operand is not None else None
            for branch in e.args.get("ifs") or []:
                if operand is not None:
                    hit = subject is not None and _same(
                        subject, self.value(branch.this, s, ctes, types)
                    )
                    if hit:
                        return self.value(branch.args["true"], s, ctes, types)
                elif self.value(branch.this, s, ctes, types) is True:
                    return self.value(branch.args["true"], s, ctes, types)
            default = e.args.get("default")
            return self.value(default, s, ctes, types) if default is not None else None
        if isinstance(e, exp.Nullif):
            a, b = self.value(e.this, s, ctes, types), self.value(e.expression, s, ctes, types)
            return None if a is not None and _same(a, b) else a
        if isinstance(e, exp.Coalesce):
            for arg in [e.this, *e.expressions]:
                v = self.value(arg, s, ctes, types)
                if v is not None:
                    return v
            return None
        if isinstance(e, exp.Cast):
            if _is_regclass(e.to):
                return self._regclass(self.value(e.this, s, ctes, types))
            if _is_regtype_array(e.to):  # the types' names, typed text[] (see _cast_oid)
                v = self.value(e.this, s, ctes, types)
                items = v.split() if isinstance(v, str) else v
                return None if v is None else [_cast(x, t.REGTYPE) for x in items]
            return _cast(self.value(e.this, s, ctes, types), _cast_oid(e.to))
        if isinstance(e, exp.Subquery):
            _, _, rows = self.query(e.this, ctes, s, types)
            return rows[0][0] if rows else None
        if _is_pg_catalog_call(e):
            return self.value(e.expression, s, ctes, types)
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Identifier):
            # (record).field, of a row _pg_expandarray gives (or each of a set of them)
            rec = self.value(e.this, s, ctes, types)
            field = e.expression.name
            if isinstance(rec, _Set):
                return _Set([r.get(field) if isinstance(r, dict) else None for r in rec])
            return rec.get(field) if isinstance(rec, dict) else None
        if isinstance(e, exp.Bracket):  # arr[i]; out of range is NULL
            arr = self.value(e.this, s, ctes, types)
            # sqlglot keeps the index 0-based (PostgreSQL's 1 is 0 here)
            index = self.value(e.expressions[0], s, ctes, types) if e.expressions else None
            if not isinstance(arr, list) or index is None:
                return None
            i = int(index)
            return arr[i] if 0 <= i < len(arr) else None
        if isinstance(e, exp.Escape) and isinstance(e.this, exp.Like | exp.ILike):
            escape = self.value(e.expression, s, ctes, types)
            return self._like(e.this, s, ctes, types, escape)
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "_pg_expandarray":
            arr = self.value(e.expressions[0], s, ctes, types)
            return _Set([_Record(x=v, n=i) for i, v in enumerate(arr or [], 1)])
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "to_regtype":
            # The type's oid, or NULL if there is none (psycopg's TypeInfo.fetch).
            name = self.value(e.expressions[0], s, ctes, types) if e.expressions else None
            key = None if name is None else str(name).strip().lower()
            return None if key is None else _OID_BY_NAME.get(key, t.CAST_NAMES.get(key))
        if isinstance(e, exp.Collate):
            return self.value(e.this, s, ctes, types)
        if isinstance(e, exp.ByteString | exp.National):
            return str(e.this).encode().decode("unicode_escape")
        if isinstance(e, exp.RegexpLike | exp.RegexpILike):
            return self._regex(e.this, e.expression, s, ctes, types, isinstance(e, exp.RegexpILike))
        if isinstance(e, exp.Operator):
            op = str(e.args.get("operator", "")).lower().replace("pg_catalog.", "").strip()
            if op in ("~", "~*", "!~", "!~*"):
                rx = self._regex(e.this, e.expression, s, ctes, types, "*" in op)
                return None if rx is None else (not rx if op.startswith("!") else rx)
            if op in ("=", "<>", "!=", "<", "<=", ">", ">="):
                cls = {
                    "=": exp.EQ,
                    "<>": exp.NEQ,
                    "!=": exp.NEQ,
                    "<": exp.LT,
                    "<=": exp.LTE,
                    ">": exp.GT,
                    ">=": exp.GTE,
                }[op]
                compared: Any = cls(this=e.this, expression=e.expression)
                return self.value(compared, s, ctes, types)
            raise FeatureNotSupported(f"operator {op} is not supported over pg_catalog")
        if isinstance(e, exp.Like | exp.ILike):
            return self._like(e, s, ctes, types, "\\")
        if isinstance(e, exp.Exists):
            _, _, rows = self.query(e.this, ctes, s, types)
            return bool(rows)
        if isinstance(e, exp.Explode | exp.Unnest):
            arg = e.this if isinstance(e, exp.Explode) else e.expressions[0]
            arr = self.value(arg, s, ctes, types)
            return _Set(list(arr or []))
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "generate_subscripts":
            arr = self.value(e.expressions[0], s, ctes, types)
            return _Set(list(range(1, len(arr or []) + 1)))
        if isinstance(e, exp.DPipe):
            a, b = self.value(e.this, s, ctes, types), self.value(e.expression, s, ctes, types)
            if isinstance(a, list) or isinstance(b, list):  # array || array: NULL is empty
                return [*(a or []), *(b or [])]
            return None if a is None or b is None else f"{a}{b}"
        if isinstance(e, exp.Trim):
            v = self.value(e.this, s, ctes, types)
            chars = self.value(e.expression, s, ctes, types) if e.expression else " "
            if v is None or chars is None:
                return None
            where = str(e.args.get("position") or "BOTH").upper()
            if where == "LEADING":
                return str(v).lstrip(str(chars))
            return str(v).rstrip(str(chars)) if where == "TRAILING" else str(v).strip(str(chars))
        if isinstance(e, exp.Replace):
            v, old, new = (
                self.value(x, s, ctes, types) for x in (e.this, e.expression, e.args["replacement"])
            )
            return None if v is None or old is None or new is None else str(v).replace(old, new)
        if isinstance(e, exp.Array):
            if len(e.expressions) == 1 and isinstance(e.expressions[0], exp.Select):
                _, _, rows = self.query(e.expressions[0], ctes, s, types)
                return [r[0] for r in rows]
            return [self.value(x, s, ctes, types) for x in e.expressions]
        if isinstance(e, exp.Func):
            name = func_name(e)
            fn = FUNCTIONS.get(name)
            if fn is not None:
                args = [self.value(a, s, ctes, types) for a in _func_args(e)]
                return fn[1](self, *args)
        raise FeatureNotSupported(f"{type(e).__name__} is not supported over pg_catalog")

    def _element_type(self, arr: exp.Expression, types: TScope) -> int:
        """The type of an element of the array ``arr`` is."""
        oid = self.type_of(arr, types)
        return t.ARRAY_ELEMENT.get(t.VECTOR_ARRAYS.get(oid, oid), t.TEXT)

    def _like(
        self, e: exp.Like | exp.ILike, s: Scope, ctes: dict[str, Any], types: TScope, escape: Any
    ) -> bool | None:
        """LIKE / ILIKE, with ``escape`` (backslash unless ESCAPE says) quoting % and _."""
        v = self.value(e.this, s, ctes, types)
        pat = self.value(e.expression, s, ctes, types)
        if v is None or pat is None or escape is None:
            return None
        out, quoted = [], False
        for c in str(pat):
            if quoted:
                out.append(re.escape(c))
                quoted = False
            elif escape and c == escape:
                quoted = True
            else:
                out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        flags = re.IGNORECASE | re.DOTALL if isinstance(e, exp.ILike) else re.DOTALL
        found = re.fullmatch("".join(out), str(v), flags) is not None
        return not found if e.args.get("negate") else found

    def _regex(
        self,
        left: exp.Expression,
        right: exp.Expression,
        s: Scope,
        ctes: dict[str, Any],
        types: TScope,
        ignore_case: bool,
    ) -> bool | None:
        v, pat = self.value(left, s, ctes, types), self.value(right, s, ctes, types)
        if v is None or pat is None:
            return None
        try:
            return re.search(str(pat), str(v), re.IGNORECASE if ignore_case else 0) is not None
        except re.error as err:
            raise DataError(f"invalid regular expression: {err}", sqlstate="2201B") from None

    def _regclass(self, v: Any) -> Any:
        """A relation's name for its oid, or its oid for its name (``'users'::regclass``)."""
        if v is None:
            return None
        rows = self.tables.get("pg_class", ([], []))[1]
        if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
            oid = int(v)
            return _RegClass(oid, next((r[1] for r in rows if r[0] == oid), str(oid)))
        name = str(v).split(".")[-1].strip('"')
        for r in rows:
            if r[1] == name:
                return _RegClass(r[0], name)
        raise UndefinedTable(f'relation "{v}" does not exist')

    def type_of(self, e: exp.Expression, types: TScope) -> int:
        if isinstance(e, exp.Paren):
            return self.type_of(e.this, types)
        if isinstance(e, exp.Boolean):
            return t.BOOL
        if isinstance(e, exp.Dot) and isinstance(e.expression, exp.Identifier):
            inner = e.this.this if isinstance(e.this, exp.Paren) else e.this
            if e.expression.name == "n":  # _pg_expandarray's (x, n): n counts from 1
                return t.INT4
            if isinstance(inner, exp.Column):  # a record read back from a subquery
                return t.INT2
            return self._element_type(inner, types)
        if isinstance(e, exp.Bracket):
            return self._element_type(e.this, types)
        if isinstance(e, exp.Escape):
            return t.BOOL
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "_pg_expandarray":
            return t.RECORD
        if isinstance(e, exp.Array):
            if len(e.expressions) == 1 and isinstance(e.expressions[0], exp.Select):
                _, ty, _ = Evaluator(
                    self.params, self.param_oids, typing_only=True, tables=self.tables
                ).query(e.expressions[0], {}, {}, types)
                return _ARRAY_OF.get(ty[0], t.TEXT_ARRAY)
            elem = self.type_of(e.expressions[0], types) if e.expressions else t.TEXT
            return _ARRAY_OF.get(elem, t.TEXT_ARRAY)
        if isinstance(e, exp.Column):
            table = e.table
            if table:
                return types.get(table, {}).get(e.name, t.TEXT)
            return next((cols[e.name] for cols in types.values() if e.name in cols), t.TEXT)
        if isinstance(e, exp.Literal):
            return t.TEXT if e.is_string else (t.NUMERIC if "." in e.this else t.INT4)
        if isinstance(e, exp.Cast):
            return _cast_oid(e.to)
        if isinstance(e, exp.Parameter):
            i = int(e.this.this) - 1
            return self.param_oids[i] if i < len(self.param_oids) else t.TEXT
        if isinstance(e, exp.Case):
            branches = [b.args["true"] for b in e.args.get("ifs") or []]
            if e.args.get("default") is not None:
                branches.append(e.args["default"])
            typed = [b for b in branches if not isinstance(b, exp.Null)]
            # a quoted literal is of unknown type: it takes another branch's, as in PostgreSQL
            known = [b for b in typed if not (isinstance(b, exp.Literal) and b.is_string)]
            return next((self.type_of(b, types) for b in known or typed), t.TEXT)
        if isinstance(e, exp.Coalesce | exp.Nullif):
            return self.type_of(e.this, types)
        if isinstance(e, exp.Add | exp.Sub | exp.Neg | exp.Mul | exp.Mod):
            return self.type_of(e.this, types)
        if isinstance(e, exp.BitwiseAnd | exp.BitwiseOr):
            return self.type_of(e.this, types)
        if isinstance(e, exp.Subquery):
            _, ty, _ = Evaluator(
                self.params, self.param_oids, typing_only=True, tables=self.tables
            ).query(e.this, {}, {}, types)
            return ty[0]
        if isinstance(e, exp.ArrayAgg):
            arg = e.this.this if isinstance(e.this, exp.Order) else e.this
            return _ARRAY_OF.get(self.type_of(arg, types), t.TEXT_ARRAY)
        if isinstance(e, exp.Count | exp.Window):
            return t.INT8
        if isinstance(e, exp.Min | exp.Max):
            return self.type_of(e.this, types)
        if isinstance(e, exp.LogicalAnd | exp.LogicalOr):
            return t.BOOL
        if isinstance(e, exp.Explode):
            arr = self.type_of(e.this, types)
            return t.ARRAY_ELEMENT.get(t.VECTOR_ARRAYS.get(arr, arr), t.TEXT)
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "generate_subscripts":
            return t.INT4
        if _is_pg_catalog_call(e):
            return self.type_of(e.expression, types)
        if isinstance(e, exp.Anonymous) and str(e.this).lower() == "to_regtype":
            return t.OID
        if isinstance(e, exp.Collate):
            return self.type_of(e.this, types)
        if isinstance(e, exp.Func) and func_name(e) in FUNCTIONS:
            return FUNCTIONS[func_name(e)][0]
        if isinstance(e, exp.Exists | exp.RegexpLike | exp.RegexpILike | exp.Operator):
            return t.BOOL
        if isinstance(e, exp.DPipe):
            left = self.type_of(e.this, types)
            return left if left in t.ARRAY_ELEMENT else t.TEXT
        return t.BOOL if isinstance(e, exp.Predicate | exp.Not | exp.And | exp.Or) else t.TEXT


def _equi_probe(
    on: exp.Expression, alias: str, cols: list[str]
) -> tuple[exp.Expression, str] | None:
    """An AND-ed ``x = alias.col`` of a join's ON, where ``x`` reads only relations
    joined before: (x, col), by which the joined relation's rows are hashed. asyncpg's
    type introspection joins pg_type with itself on typelem = oid, which a nested loop
    took 0.2 s over for each connection."""
    conds = on.flatten() if isinstance(on, exp.And) else [on]
    for cond in conds:
        if not isinstance(cond, exp.EQ):
            continue
        for mine, other in ((cond.expression, cond.this), (cond.this, cond.expression)):
            if (
                isinstance(mine, exp.Column)
                and str(mine.table) == alias
                and mine.name in cols
                and isinstance(other, exp.Column)
                and str(other.table) not in ("", alias)
            ):
                return other, mine.name
    return None


class _HashedRows:
    """A joined relation's rows by the value of one column, for an equality in an ON. It
    finds a superset of the rows the equality holds for (the whole ON is still
    evaluated on each): numbers and text are keyed so that an oid meets its digits as
    text (``_comparable``); rows holding other kinds of value are always candidates."""

    def __init__(self, rows: Rows, col: int):
        self.rows = rows
        self.keyed: dict[tuple[str, Any], list[int]] = {}
        self.others: list[int] = []
        for i, r in enumerate(rows):
            v = r[col]
            if v is None:
                continue  # NULL = x is never true
            keys = self._keys(v)
            if keys is None:
                self.others.append(i)
            for k in keys or ():
                self.keyed.setdefault(k, []).append(i)

    @staticmethod
    def _keys(v: Any) -> list[tuple[str, Any]] | None:
        if type(v) is not bool and isinstance(v, int):
            return [("n", int(v))]
        if isinstance(v, str):
            digits = v.lstrip("-").isdigit()
            return [("s", v), ("n", int(v))] if digits else [("s", v)]
        return None

    def matching(self, v: Any) -> Rows:
        if v is None:
            return []
        keys = self._keys(v)
        if keys is None:
            return self.rows
        found = set(self.others)
        for k in keys:
            found.update(self.keyed.get(k, ()))
        return [self.rows[i] for i in sorted(found)]


def _pushable_conjuncts(
    node: exp.Select, aliases: set[str]
) -> list[tuple[exp.Expression, set[str]]]:
    """The WHERE's AND-ed conditions that read only qualified columns of this query's
    relations (no subquery), each with the relations it reads."""
    where = node.args.get("where")
    if where is None or any(
        j.args.get("side") in ("RIGHT", "FULL") for j in node.args.get("joins") or []
    ):
        return []
    out: list[tuple[exp.Expression, set[str]]] = []
    for cond in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        if not isinstance(cond, exp.Expression) or cond.find(exp.Select, exp.Subquery, exp.Exists):
            continue
        tables = {str(c.table) for c in cond.find_all(exp.Column)}
        if tables and "" not in tables and tables <= aliases:
            out.append((cond, tables))
    return out


# The arithmetic the catalog queries use (JDBC's getIndexInfo: indoption & 1).
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
    exp.Mod: lambda a, b: a % b,
    exp.BitwiseAnd: lambda a, b: int(a) & int(b),
    exp.BitwiseOr: lambda a, b: int(a) | int(b),
}


class _Record(dict[str, Any]):
    """A row value (PostgreSQL's record): _pg_expandarray's (x, n)."""

    def __str__(self) -> str:
        return "(" + ",".join("" if v is None else str(v) for v in self.values()) + ")"


class _Set(list[Any]):
    """The rows a set-returning function (unnest) gives in a select list."""


def _expand(row: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    n = max((len(v) for v in row if isinstance(v, _Set)), default=1)
    return [
        tuple((v[i] if i < len(v) else None) if isinstance(v, _Set) else v for v in row)
        for i in range(n)
    ]


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class _NullRow(dict[str, Any]):
    """The NULL-extended row of a relation with no known columns (LEFT JOIN)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> None:
        return None


def _nth_key(pos: int) -> Callable[[tuple[list[Any], int]], Any]:
    return lambda member: member[0][pos]


def _output_name(e: exp.Expr) -> str:
    """The output column's name, as PostgreSQL's FigureColname gives it: the alias, a
    column's name, a function's, a cast's operand's (else its type's), CASE's ELSE
    branch's (else "case"); ?column? for constants and operators."""
    if isinstance(e, exp.Alias):
        return e.alias
    return _figure(e)[0] or "?column?"


def _figure(e: exp.Expr) -> tuple[str | None, int]:
    """(name, strength): 2 a name given by a column or function, 1 a fallback."""
    if isinstance(e, exp.Column):
        return e.name, 2
    if isinstance(e, exp.Paren | exp.Bracket):
        return _figure(e.this)
    if isinstance(e, exp.Dot):
        if isinstance(e.expression, exp.Func):  # pg_catalog.f(..)
            return _figure(e.expression)
        return e.expression.name, 2  # (record).field
    if isinstance(e, exp.Cast):
        name, strength = _figure(e.this)
        if strength <= 1:
            return _type_word(e.to), 1
        return name, strength
    if isinstance(e, exp.Case):
        default = e.args.get("default")
        name, strength = _figure(default) if default is not None else (None, 0)
        return (name, strength) if strength > 1 else ("case", 1)
    if isinstance(e, exp.Exists):
        return "exists", 2
    if isinstance(e, exp.Array):
        return "array", 2
    if isinstance(e, exp.Subquery):
        first = e.this.expressions[0] if isinstance(e.this, exp.Select) else None
        return (_output_name(first), 2) if first is not None else (None, 0)
    if isinstance(e, exp.Explode | exp.Unnest):
        return "unnest", 2
    if isinstance(e, exp.Coalesce):
        return "coalesce", 2
    if isinstance(e, exp.Func) and not isinstance(e, exp.Binary):
        return func_name(e), 2
    return None, 0


def _type_word(to: exp.Expression) -> str:
    """The last word of a cast's type, as FigureColname names a cast of a constant."""
    if isinstance(to, exp.ObjectIdentifier):
        return str(to.this).lower()
    if isinstance(to, exp.DataType) and isinstance(to.args.get("kind"), exp.Dot):
        return to.args["kind"].expression.name.lower()
    return to.sql(CatalogDialect).lower().split(".")[-1]


def _reg_kind(to: exp.Expression) -> str | None:
    """regclass, regtype, regproc ..: the object identifier type a cast names, as
    ``::regclass`` or ``::pg_catalog.regclass``; None for other types."""
    if isinstance(to, exp.ObjectIdentifier):
        return str(to.this).lower()
    if (
        isinstance(to, exp.DataType)
        and to.this == exp.DataType.Type.USERDEFINED
        and isinstance(to.args.get("kind"), exp.Dot)
        and to.args["kind"].this.name.lower() == "pg_catalog"
    ):
        name = to.args["kind"].expression.name.lower()
        return name if name.startswith("reg") else None
    return None


def _is_regclass(to: exp.Expression) -> bool:
    return _reg_kind(to) == "regclass"


class _RegClass(int):
    """A regclass value: compares and sorts as the relation's oid, prints as its name."""

    name: str

    def __new__(cls, oid: int, name: str) -> _RegClass:
        value = super().__new__(cls, oid)
        value.name = name
        return value

    def __str__(self) -> str:
        return self.name


def _uncorrelated_unnest(node: exp.Unnest) -> bool:
    """One array, no WITH ORDINALITY, and neither a column read (``unnest(i.indkey)`` would
    read the row of another FROM item, which sources are not evaluated against) nor a
    literal (``'{1,2}'::oid[]``, which _cast does not read as an array)."""
    return (
        len(node.expressions) == 1
        and not node.args.get("offset")
        and node.expressions[0].find(exp.Column, exp.Literal) is None
    )


def _is_regtype_array(to: exp.Expression) -> bool:
    return (
        isinstance(to, exp.DataType)
        and to.this == exp.DataType.Type.ARRAY
        and isinstance(to.expressions[0], exp.ObjectIdentifier)
        and str(to.expressions[0].this).lower() == "regtype"
    )


def _same(a: Any, b: Any) -> bool:
    if b is None:
        return False
    a, b = _comparable(a, b)
    return bool(a == b)


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    """An oid compared with its text (``attrelid = '16384'``, as psql writes it) compares
    as numbers, as PostgreSQL casts the unknown literal to the column's type."""
    if isinstance(a, int) and isinstance(b, str) and b.lstrip("-").isdigit():
        return a, int(b)
    if isinstance(b, int) and isinstance(a, str) and a.lstrip("-").isdigit():
        return int(a), b
    return a, b


def func_name(e: exp.Func) -> str:
    if isinstance(e, exp.Anonymous):
        return str(e.this).lower()
    return e.sql_name().lower()


def _func_args(e: exp.Func) -> list[exp.Expression]:
    if isinstance(e, exp.Anonymous):
        return list(e.expressions)
    return [a for a in e.iter_expressions() if isinstance(a, exp.Expression)]


def _format_type(ev: Evaluator, oid: Any, typmod: Any = None) -> str | None:
    if oid is None:
        return None
    name = _NAME_BY_OID.get(int(oid))
    sql_name = _SQL_TYPE_NAMES.get(name or "", name or "???")
    mod = int(typmod) if typmod is not None else -1
    if mod >= 4 and name in ("varchar", "bpchar"):
        return f"{sql_name}({mod - 4})"
    if mod >= 4 and name == "numeric":
        return f"numeric({(mod - 4) >> 16},{(mod - 4) & 0xFFFF})"
    return sql_name


_SQL_TYPE_NAMES = {
    "int8": "bigint",
    "int4": "integer",
    "int2": "smallint",
    "float8": "double precision",
    "float4": "real",
    "bool": "boolean",
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "varchar": "character varying",
    "bpchar": "character",
    "_float4": "real[]",
    "_float8": "double precision[]",
    "_int8": "bigint[]",
    "_text": "text[]",
}


def _indexdef(ev: Evaluator, oid: Any, column: Any = 0, pretty: Any = False) -> str | None:
    """pg_get_indexdef(index[, column, pretty]): the CREATE INDEX, or with column n > 0 the
    n-th indexed column's name; the pretty form leaves out the (visible) schema."""
    if oid is None:
        return None
    classes = {r[0]: r for r in ev.tables.get("pg_class", ([], []))[1]}
    idx = next((r for r in ev.tables.get("pg_index", ([], []))[1] if r[0] == int(oid)), None)
    if idx is None or idx[1] not in classes:
        return None
    table = classes[idx[1]][1]
    attnum = int(idx[13][0])
    col = next(
        (
            r[1]
            for r in ev.tables.get("pg_attribute", ([], []))[1]
            if r[0] == idx[1] and r[4] == attnum
        ),
        "?",
    )
    if column and int(column) > 0:
        return col if int(column) == 1 else None
    unique = "UNIQUE " if idx[4] else ""
    where = table if pretty else f"public.{table}"
    return f"CREATE {unique}INDEX {classes[int(oid)][1]} ON {where} USING btree ({col})"


def _constraintdef(ev: Evaluator, oid: Any, *rest: Any) -> str | None:
    for r in ev.tables.get("pg_constraint", ([], []))[1]:
        if oid is not None and r[0] == int(oid):
            attnum = r[18][0] if r[18] else 1  # conkey
            key = next(
                (a[1] for a in ev.tables["pg_attribute"][1] if a[0] == r[7] and a[4] == attnum),
                "id",
            )
            return f"PRIMARY KEY ({key})"
    return None


def _userbyid(ev: Evaluator, oid: Any) -> str | None:
    rows = ev.tables.get("pg_roles", ([], []))[1]
    return next((r[1] for r in rows if oid is not None and r[0] == int(oid)), "nodedb")


def _json_build_object(ev: Evaluator, *args: Any) -> dict[str, Any]:
    if len(args) % 2:
        raise DataError("argument list must have even number of elements", sqlstate="22023")
    return {str(args[i]): args[i + 1] for i in range(0, len(args), 2)}


def _array_to_string(ev: Evaluator, arr: Any, sep: Any = ",", null: Any = None) -> str | None:
    if arr is None:
        return None
    items = arr if isinstance(arr, list) else [arr]
    return str(sep).join(
        str(v) if v is not None else str(null) for v in items if v is not None or null is not None
    )


def _setting(ev: Evaluator, name: Any) -> Any:
    rows = ev.tables.get("pg_settings", ([], []))[1]
    found = next((r[1] for r in rows if r[0] == name), None)
    return "heap" if found is None and name == "default_table_access_method" else found


# name -> (result type, implementation(evaluator, *args))
FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "pg_get_userbyid": (t.NAME, _userbyid),
    "pg_table_is_visible": (t.BOOL, lambda ev, oid: True),
    "pg_type_is_visible": (t.BOOL, lambda ev, oid: True),
    "pg_function_is_visible": (t.BOOL, lambda ev, oid: True),
    "format_type": (t.TEXT, _format_type),
    "obj_description": (t.TEXT, lambda ev, *a: None),
    "col_description": (t.TEXT, lambda ev, *a: None),
    "shobj_description": (t.TEXT, lambda ev, *a: None),
    # adbin holds the expression's text already (pg_catalog.py pg_attrdef)
    "pg_get_expr": (t.TEXT, lambda ev, expr, *a: expr),
    "pg_get_indexdef": (t.TEXT, _indexdef),
    "pg_get_constraintdef": (t.TEXT, _constraintdef),
    "pg_get_statisticsobjdef_columns": (t.TEXT, lambda ev, *a: None),
    "pg_get_partkeydef": (t.TEXT, lambda ev, *a: None),
    "pg_get_viewdef": (t.TEXT, lambda ev, *a: None),
    "pg_get_function_result": (t.TEXT, lambda ev, *a: None),
    "pg_get_function_arguments": (t.TEXT, lambda ev, *a: None),
    "pg_encoding_to_char": (t.NAME, lambda ev, enc: "UTF8"),
    "array_to_string": (t.TEXT, _array_to_string),
    "json_build_object": (t.JSON, _json_build_object),
    "has_table_privilege": (t.BOOL, lambda ev, *a: True),
    "has_schema_privilege": (t.BOOL, lambda ev, *a: True),
    "has_database_privilege": (t.BOOL, lambda ev, *a: True),
    "pg_has_role": (t.BOOL, lambda ev, *a: True),
    "current_schema": (t.NAME, lambda ev: "public"),
    "current_setting": (t.TEXT, lambda ev, name, missing_ok=False: _setting(ev, name)),
    "current_schemas": (
        t.NAME_ARRAY,
        lambda ev, implicit=True: (["pg_catalog"] if implicit else []) + ["public"],
    ),
    "pg_relation_size": (t.INT8, lambda ev, *a: 0),
    "pg_total_relation_size": (t.INT8, lambda ev, *a: 0),
    "pg_size_pretty": (t.TEXT, lambda ev, n: None if n is None else f"{int(n)} bytes"),
    "quote_ident": (
        t.TEXT,
        lambda ev, v: (
            None
            if v is None
            else (
                v
                if re.fullmatch(r"[a-z_][a-z0-9_]*", str(v))
                else '"' + str(v).replace('"', '""') + '"'
            )
        ),
    ),
    "lower": (t.TEXT, lambda ev, v: None if v is None else str(v).lower()),
    "upper": (t.TEXT, lambda ev, v: None if v is None else str(v).upper()),
}


def _is_pg_catalog_call(e: exp.Expression) -> bool:
    """``pg_catalog.f(..)`` (or information_schema's): the same function as ``f(..)``."""
    return (
        isinstance(e, exp.Dot)
        and isinstance(e.this, exp.Identifier)
        and e.this.name.lower() in CATALOG_SCHEMAS
        and isinstance(e.expression, exp.Func)
    )


def _has_aggregate(e: exp.Expression) -> bool:
    """An aggregate call in this SELECT's own expression (not inside a subquery)."""
    if isinstance(e, exp.ArrayAgg | exp.Count | exp.Min | exp.Max | exp.LogicalAnd | exp.LogicalOr):
        return True
    if isinstance(e, exp.Subquery):
        return False
    return any(_has_aggregate(c) for c in e.iter_expressions())


def _column(e: exp.Column, s: Scope) -> Any:
    if e.table:
        table = s.get(e.table)
        if table is None or e.name not in table:
            raise DataError(f"column {e.table}.{e.name} does not exist", sqlstate="42703")
        return table[e.name]
    for cols in reversed(list(s.values())):
        if e.name in cols:
            return cols[e.name]
    raise DataError(f'column "{e.name}" does not exist', sqlstate="42703")


def _cast(v: Any, oid: int) -> Any:
    if v is None:
        return None
    if oid == t.REGTYPE:  # a type's name as PostgreSQL prints it (format_type's)
        if not v:
            return "-"
        name = _NAME_BY_OID.get(int(v), str(v))
        return _SQL_TYPE_NAMES.get(name, name)
    if oid in t.ARRAY_ELEMENT or oid == t.OID_ARRAY:
        return list(v)
    if oid in (t.OID, t.INT2, t.INT4, t.INT8):
        return int(v)
    if oid in t.TEXTLIKE:
        return str(v)
    return v


def _output_position(e: exp.Expression, names: list[str]) -> int | None:
    if isinstance(e, exp.Column) and not e.table and e.name in names:
        return names.index(e.name)
    if isinstance(e, exp.Literal) and not e.is_string:
        return int(e.this) - 1
    return None


def _position(e: exp.Expression, names: list[str]) -> int:
    if isinstance(e, exp.Column) and e.name in names:
        return names.index(e.name)
    if isinstance(e, exp.Literal) and not e.is_string:
        return int(e.this) - 1
    raise FeatureNotSupported("ORDER BY over pg_catalog takes an output column")


def _column_key(pos: int) -> Callable[[tuple[Any, ...]], tuple[int, Any]]:
    return lambda row: _sortable(row[pos])


def _sortable(v: Any) -> tuple[int, Any]:
    return (1, 0) if v is None else (0, tuple(v) if isinstance(v, list) else v)


def _distinct(rows: Rows) -> Rows:
    seen: set[Any] = set()
    out = []
    for r in rows:
        key = tuple(tuple(v) if isinstance(v, list) else v for v in r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
