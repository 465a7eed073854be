"""From statement text to ``ast`` statements, cached by text.

NodeDB's own statements go to nodedb_statements.py; standard SELECT, INSERT
.. VALUES, UPDATE and DELETE go to sqlglot (PostgreSQL dialect) and its tree
is turned into ours. The cache means a prepared or repeated statement is
parsed once; parsed statements are immutable, so sessions share them.

A text missing the cache is read by sqlglot once: NodeDB's tokenizer reads only
its first keyword to tell it is standard SQL, a text without ``;`` is not split,
and a catalog query is parsed with the catalog's dialect alone (a query naming a
catalog relation it does not read, with the letters oid in it, is parsed twice).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict

import sqlglot
import sqlglot.errors
from sqlglot import exp

from nodedb_server.errors import (
    FeatureNotSupported,
    StatementTooComplex,
    SyntaxError_,
    UndefinedFunction,
)
from nodedb_server.sql import ast, catalog_query, relational
from nodedb_server.sql.expr import Const, Expr, Field, Func, Star, from_sqlglot
from nodedb_server.sql.functions import FUNCTIONS
from nodedb_server.sql.nodedb_statements import (
    _first_line,
    assignments,
    item_name,
    param_ends,
    parse_nodedb,
    parse_prepare_head,
    refuse_star_alias,
    returning_items,
    split_statements,
    syntax_error,
    unread,
)

# The cache is bounded by the text it holds as well as by entries: a parsed statement
# is a few times the size of its text, and a bulk load sends thousands of distinct
# statements of hundreds of KiB each (an INSERT of 1,000 documents) that will never be
# seen again. Held without this bound they kept gigabytes alive after the load.
CACHE_SIZE = 4096
CACHE_TEXT_BYTES = 8 << 20  # statement text held, in all
CACHE_MAX_TEXT = 16 << 10  # a longer statement is parsed each time it comes
# What PREPARE takes: PostgreSQL's PreparableStmt (SELECT, INSERT, UPDATE, DELETE), and
# NodeDB's statements that read or write data the same way.
PREPARABLE = (
    ast.Select,
    ast.Insert,
    ast.Update,
    ast.Delete,
    ast.CatalogQuery,
    ast.RelationalQuery,
    ast.VectorSearch,
    ast.GraphQuery,
    ast.GraphAlgo,
    ast.GraphEdgeWrite,
    ast.CrdtApply,
)
_cache: OrderedDict[str, list[ast.Statement]] = OrderedDict()
_cached_text = 0
# Long statements are parsed on worker threads while the event loop reads the cache.
_cache_lock = threading.Lock()
# sqlglot parses about 5-10 ms of CPU per KiB of text: a statement longer than this is
# parsed on a worker thread, as on the event loop it would stall every other session
# for that long; the hand-off costs a fraction of a millisecond.
PARSE_ON_THREAD_TEXT = 1 << 10


def _cached(sql: str) -> list[ast.Statement] | None:
    with _cache_lock:
        hit = _cache.get(sql)
        if hit is not None:
            _cache.move_to_end(sql)
        return hit


def parse(sql: str) -> list[ast.Statement]:
    """Every statement in ``sql`` (several may be separated by semicolons)."""
    global _cached_text
    hit = _cached(sql)
    if hit is not None:
        return hit
    try:
        statements = [parse_one(part) for part in split_statements(sql)] or [ast.Empty()]
    except RecursionError:
        raise StatementTooComplex(
            "statement too complex",
            detail="Its expressions or values nest (or chain) too deeply to parse.",
        ) from None
    if len(sql) <= CACHE_MAX_TEXT:
        with _cache_lock:
            if sql in _cache:  # parsed meanwhile on another thread
                return statements
            _cache[sql] = statements
            _cached_text += len(sql)
            while len(_cache) > CACHE_SIZE or _cached_text > CACHE_TEXT_BYTES:
                old, _ = _cache.popitem(last=False)
                _cached_text -= len(old)
    return statements


async def parse_off_loop(sql: str) -> list[ast.Statement]:
    """``parse``, on a worker thread when the text is long enough to take a while."""
    if len(sql) > PARSE_ON_THREAD_TEXT and _cached(sql) is None:
        return await asyncio.to_thread(parse, sql)
    return parse(sql)


def parse_one(sql: str) -> ast.Statement:
    stmt = parse_nodedb(sql)
    if stmt is not None:
        return stmt
    head = sql.lstrip().split(None, 1)
    word = head[0].lower() if head else ""
    if word == "explain":
        rest = head[1] if len(head) > 1 else ""
        first, _, after = rest.partition(" ")
        analyze = first.lower() == "analyze"
        inner = parse_one(after if analyze else rest)
        if not isinstance(inner, ast.Select | ast.Update | ast.Delete):
            raise SyntaxError_("EXPLAIN takes a SELECT, UPDATE or DELETE")
        return ast.Explain(inner, analyze)
    if word == "prepare":
        return _prepare(sql)
    upsert = word == "upsert"
    if upsert:
        sql = re.sub(r"(?i)^\s*upsert", "INSERT", sql, count=1)
        word = "insert"
    if word not in ("select", "insert", "update", "delete", "with", "values", "table"):
        raise SyntaxError_(
            f'syntax error at or near "{head[0] if head else ""}"'
            if word
            else "syntax error at end of input"
        )
    reads = word in ("select", "with")
    tree = _standard_tree(sql, reads)
    if isinstance(tree, ast.CatalogQuery):
        return tree
    try:
        return _from_tree(tree, sql, upsert, reads)
    finally:
        if len(sql) > PARSE_ON_THREAD_TEXT:
            _release(tree)


def _standard_tree(sql: str, reads: bool) -> exp.Expr | ast.CatalogQuery:
    """sqlglot's tree of a standard statement, or the catalog query it is, from one parse
    of the text where that can be: a query naming a catalog relation is read with the
    catalog's dialect first, as a driver's catalog query is then parsed once, not once to
    route it and again to run it."""
    catalog_first = reads and catalog_query.names_catalog(sql)
    early = _catalog_tree(sql) if catalog_first else None
    if early is not None and catalog_query.reads_catalog(early):
        return ast.CatalogQuery(catalog_query.Query(early))
    text = _spaced_params(sql)
    if early is not None and text is sql and catalog_query.reads_as_postgres(sql):
        return early  # the tree PostgreSQL's dialect would give
    try:
        return sqlglot.parse_one(text, read="postgres")
    except sqlglot.errors.ParseError as e:
        catalog = _catalog_only(sql) if reads and not catalog_first else None
        if catalog is None:
            raise syntax_error(e) from None
        return catalog
    except sqlglot.errors.TokenError as e:
        raise SyntaxError_(f"syntax error: {_first_line(e)}") from None


_DOLLAR_QUOTE = re.compile(r"\$[A-Za-z_]*\$")
# A $n that something other than a space follows at once, anywhere in the text: without
# one there is nothing to space, and the text need not be tokenized to find that out.
_PARAM_THEN_TEXT = re.compile(r"\$\d+[^\s\d]")


def _spaced_params(sql: str) -> str:
    """``sql`` with a space after each ``$n`` that an operator follows at once: sqlglot
    (30.x) fails to tokenize ``$1+$2``, which PostgreSQL reads as ``$1 + $2``. Left alone
    where dollar quoting could hold a ``$n`` that is text."""
    if "$" not in sql or not _PARAM_THEN_TEXT.search(sql) or _DOLLAR_QUOTE.search(sql):
        return sql
    cuts = [end for end in param_ends(sql) if end < len(sql) and not sql[end].isspace()]
    if not cuts:
        return sql
    pieces = [sql[a:b] for a, b in zip([0, *cuts], [*cuts, len(sql)], strict=True)]
    return " ".join(pieces)


def _release(tree: exp.Expr) -> None:
    """Break the tree's parent links, so that reference counting frees it here, on the
    thread that parsed it. Left to the cyclic collector, a large tree (140,000 nodes for
    a 20,000-row INSERT) is freed by whichever thread next runs a full collection, most
    often the event loop: 0.3 s, measured, during which no session is served."""
    for node in list(tree.walk()):
        node.parent = None


def _from_tree(tree: exp.Expr, sql: str, upsert: bool, reads: bool) -> ast.Statement:
    if reads and catalog_query.reads_catalog(tree):
        return ast.CatalogQuery(catalog_query.Query(catalog_query.parse(sql)))
    if isinstance(tree, exp.Select):
        if tree.args.get("joins") or (tree.args.get("limit") and tree.args.get("offset")):
            _refuse_stray_commas(sql)
        try:
            select = _select(tree)
        except (FeatureNotSupported, UndefinedFunction):
            if _own_functions(tree):
                raise  # NodeDB's functions (time_bucket, doc_get ..) run natively or not at all
            if _catalog_functions(tree):  # pgcli: SELECT unnest(current_schemas(true))
                return ast.CatalogQuery(catalog_query.Query(catalog_query.parse(sql)))
            return ast.RelationalQuery(relational.Query.of(tree, sql))
        item = select.items[0].expr if select.items else None
        if isinstance(item, Func) and item.name == "crdt_apply":
            if select.source is not None or len(select.items) != 1 or len(item.args) != 3:
                raise SyntaxError_(
                    "use crdt_apply(collection, doc_id, update) alone: "
                    "SELECT crdt_apply('c', 'doc', $1)"
                )
            return ast.CrdtApply(*item.args)
        return select
    if relational.is_relational(tree):
        return ast.RelationalQuery(relational.Query.of(tree, sql))
    if isinstance(tree, exp.Insert):
        return _insert(tree, upsert)
    if isinstance(tree, exp.Update):
        return _update(tree)
    if isinstance(tree, exp.Delete):
        unread(tree, ("this", "where", "returning"))
        return ast.Delete(_table(tree.this), _where(tree), returning_items(tree))
    raise FeatureNotSupported(f"{type(tree).__name__.upper()} statements are not supported")


def _own_functions(tree: exp.Expr) -> bool:
    """Whether the query calls a function of NodeDB's own that DataFusion does not have."""
    return any(
        str(call.this).lower() in FUNCTIONS
        and str(call.this).lower() not in relational.known_functions()
        for call in tree.find_all(exp.Anonymous)
    )


def _catalog_functions(tree: exp.Expr) -> bool:
    """Whether the query calls a catalog function DataFusion does not have
    (current_schemas, pg_get_userbyid ..): the catalog evaluator answers it."""
    names = {catalog_query.func_name(call) for call in tree.find_all(exp.Func)}
    return any(
        n in catalog_query.FUNCTIONS and n not in relational.known_functions() for n in names
    )


# The clause keywords a top-level comma is read against: after WHERE, HAVING, OFFSET or
# FETCH PostgreSQL has no list, so a comma there is a syntax error.
_CLAUSES = {
    sqlglot.TokenType.SELECT: "select",
    sqlglot.TokenType.FROM: "from",
    sqlglot.TokenType.WHERE: "where",
    sqlglot.TokenType.GROUP_BY: "group",
    sqlglot.TokenType.HAVING: "having",
    sqlglot.TokenType.WINDOW: "window",
    sqlglot.TokenType.ORDER_BY: "order",
    sqlglot.TokenType.LIMIT: "limit",
    sqlglot.TokenType.OFFSET: "offset",
    sqlglot.TokenType.FETCH: "fetch",
    sqlglot.TokenType.UNION: "select",
    sqlglot.TokenType.INTERSECT: "select",
    sqlglot.TokenType.EXCEPT: "select",
}


def _refuse_stray_commas(sql: str) -> None:
    """Refuse what sqlglot (30.x) reads leniently: ``WHERE a > 1, x`` it takes as a comma
    join of ``x``, and ``LIMIT 1, 2`` (MySQL's form) as ``LIMIT 2 OFFSET 1``. PostgreSQL
    refuses both as syntax errors, and so must we rather than run something else. Read
    only for a SELECT whose tree has a join or both LIMIT and OFFSET, so the tokens are
    walked only where a stray comma could hide."""
    depth, clause = 0, "select"
    for tok in sqlglot.tokenize(sql, read="postgres"):
        kind = tok.token_type
        if kind == sqlglot.TokenType.L_PAREN:
            depth += 1
        elif kind == sqlglot.TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and kind in _CLAUSES:
            clause = _CLAUSES[kind]
        elif depth == 0 and kind == sqlglot.TokenType.COMMA:
            if clause == "limit":
                raise SyntaxError_("LIMIT #,# syntax is not supported")
            if clause in ("where", "having", "offset", "fetch"):
                raise SyntaxError_('syntax error at or near ","')


def _prepare(sql: str) -> ast.Prepare:
    name, oids, body = parse_prepare_head(sql)
    inner = parse_one(body)
    if not isinstance(inner, PREPARABLE):
        word = body.split(None, 1)[0]
        raise SyntaxError_(
            f'syntax error at or near "{word}": PREPARE takes SELECT, INSERT, UPDATE or DELETE'
        )
    return ast.Prepare(name, oids, inner, body)


def _catalog_only(sql: str) -> ast.CatalogQuery | None:
    """A query PostgreSQL's grammar in sqlglot refuses (``$1::oid[]``) may still be a catalog
    query, which is read with the catalog's dialect."""
    tree = _catalog_tree(sql)
    if tree is None or not catalog_query.reads_catalog(tree):
        return None
    return ast.CatalogQuery(catalog_query.Query(tree))


def _catalog_tree(sql: str) -> exp.Expression | None:
    """``sql`` as the catalog's dialect reads it, or None if it cannot."""
    try:
        return catalog_query.parse(sql)
    except SyntaxError_:
        return None


def _table(node: exp.Expression | None) -> str:
    if not isinstance(node, exp.Table):
        raise FeatureNotSupported("only a single collection may be named here")
    unread(node, ("this", "db", "alias"))
    db = node.args.get("db")
    return f"{db.name}.{node.name}" if db is not None else node.name


def _where(tree: exp.Expression) -> Expr | None:
    where = tree.args.get("where")
    return from_sqlglot(where.this) if where is not None else None


def _select(tree: exp.Select) -> ast.Select:
    for key in ("joins", "having", "windows", "distinct", "with"):
        if tree.args.get(key):
            raise FeatureNotSupported(f"SELECT with {key.upper()} is not supported")
    source = None
    frm = tree.args.get("from_") or tree.args.get("from")
    if frm is not None:
        source = _table(frm.this)
    items: list[ast.SelectItem] = []
    star = False
    for node in tree.expressions:
        refuse_star_alias(node)
        inner = node.this if isinstance(node, exp.Alias) else node
        expr = from_sqlglot(inner)
        if isinstance(expr, Star):
            star = True
            items.append(ast.SelectItem(expr, "*"))
            continue
        items.append(ast.SelectItem(expr, item_name(node, expr)))
    group = tree.args.get("group")
    group_by = [from_sqlglot(g) for g in group.expressions] if group is not None else []
    order: list[ast.OrderItem] = []
    order_node = tree.args.get("order")
    if order_node is not None:
        names = {it.name: i for i, it in enumerate(items)}
        for o in order_node.expressions:
            e = o.this
            desc = bool(o.args.get("desc"))
            if isinstance(e, exp.Literal) and not e.is_string:
                pos = int(e.this) - 1
                if not 0 <= pos < len(items):
                    raise SyntaxError_(
                        f"ORDER BY position {pos + 1} is not in select list", sqlstate="42P10"
                    )
                order.append(ast.OrderItem(None, pos, desc))
            elif isinstance(e, exp.Column) and not e.table and e.name in names and not star:
                order.append(ast.OrderItem(None, names[e.name], desc))
            else:
                order.append(ast.OrderItem(from_sqlglot(e), None, desc))
    group_by = [_group_ref(g, items) for g in group_by]
    limit = tree.args.get("limit")
    offset = tree.args.get("offset")
    unread(tree, ("expressions", "from_", "from", "where", "group", "order", "limit", "offset"))
    return ast.Select(
        items=items,
        star=star,
        source=source,
        where=_where(tree),
        group_by=group_by,
        order_by=order,
        limit=from_sqlglot(limit.expression) if limit is not None else None,
        offset=from_sqlglot(offset.expression) if offset is not None else None,
    )


def _group_ref(g: Expr, items: list[ast.SelectItem]) -> Expr:
    """GROUP BY 1 or GROUP BY alias names a select item."""
    if isinstance(g, Const) and isinstance(g.value, int) and 1 <= g.value <= len(items):
        return items[g.value - 1].expr
    if isinstance(g, Field) and g.table is None:
        for it in items:
            if it.name == g.name and not isinstance(it.expr, Field | Star):
                return it.expr
    return g


def _insert(tree: exp.Insert, upsert: bool) -> ast.Insert:
    schema = tree.this
    values = tree.expression
    positional = not isinstance(schema, exp.Schema)  # a table's columns, in their order
    if positional:
        name = _table(schema)
        width = max((len(v.expressions) for v in getattr(values, "expressions", [])), default=0)
        cols = [""] * width
    else:
        name = _table(schema.this)
        cols = [c.name for c in schema.expressions]
    if isinstance(values, exp.Select) or relational.is_relational(values):
        return _insert_select(tree, name, cols, positional, upsert)
    if not isinstance(values, exp.Values):
        raise FeatureNotSupported("INSERT .. SELECT is not supported")
    if values.alias:  # sqlglot reads a word after VALUES (..) as its alias; PostgreSQL does not
        raise SyntaxError_(f'syntax error at or near "{values.alias}"')
    unread(tree, ("this", "expression", "conflict", "returning"))
    rows = []
    for tup in values.expressions:
        exprs = [from_sqlglot(e) for e in tup.expressions]
        if len(exprs) != len(cols):
            raise SyntaxError_("INSERT has a different number of values than fields")
        rows.append(list(zip(cols, exprs, strict=True)))
    return ast.Insert(
        name,
        rows,
        _on_conflict(tree),
        upsert,
        returning=returning_items(tree),
        positional=positional,
    )


def _on_conflict(tree: exp.Insert) -> ast.OnConflict | None:
    oc = tree.args.get("conflict")
    if oc is None:
        return None
    unread(oc, ("action", "conflict_keys", "expressions"))
    if "NOTHING" in str(oc.args.get("action") or "").upper():
        return ast.OnConflict("nothing")
    return ast.OnConflict("update", assignments(oc.expressions))


def _insert_select(
    tree: exp.Insert, name: str, cols: list[str], positional: bool, upsert: bool
) -> ast.Insert:
    """INSERT INTO t [(cols)] SELECT ..: the query parsed as it would be alone (SQLAlchemy's
    ORM sends one for each batch of rows: .. SELECT p0, p1 FROM (VALUES ..) ORDER BY ..)."""
    unread(tree, ("this", "expression", "conflict", "returning"))
    query_tree = tree.expression
    query = _from_tree(query_tree, query_tree.sql(dialect="postgres"), False, True)
    if isinstance(query, ast.CatalogQuery):
        raise FeatureNotSupported("INSERT .. SELECT from the catalog is not supported")
    return ast.Insert(
        name,
        [],
        _on_conflict(tree),
        upsert,
        returning=returning_items(tree),
        positional=positional,
        query=query,
        columns=() if positional else tuple(cols),
    )


def _update(tree: exp.Update) -> ast.Update:
    if tree.args.get("from") or tree.args.get("from_"):
        raise FeatureNotSupported("UPDATE .. FROM is not supported")
    unread(tree, ("this", "expressions", "where", "returning"))
    return ast.Update(
        _table(tree.this), assignments(tree.expressions), _where(tree), returning_items(tree)
    )
