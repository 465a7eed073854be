"""The statement hot path compiled with mypyc, used only when built from this very tree.

The modules of ``HOT`` are plain Python that mypyc compiles unchanged into C
extensions (``tools/compile.py``, which ``make run`` and ``make test`` run). The
extensions go to ``_compiled/`` with the digest of every source file of the package at
build time. ``install`` (called when the package is imported) puts a finder first on
``sys.meta_path`` that loads the modules of ``HOT`` from there, but only while that
digest still matches the sources: after any edit, and with ``NODEDB_PURE_PYTHON`` set,
every module runs as the Python it is, which stays the reference behaviour. A compiled
module is the same source, so the two behave alike; the test suite runs on the
compiled build and again in part on the pure one (``make test``).

Why these modules: profiles of W1, W2 and W7 (BENCH.md) put most of a statement's and
a replay's Python time in the message codec, the protocol machine, parameter and row
values, the session, the row executor, expressions, the type table, WAL records and
their writer, the row codec and the tenant state's replay; then the row engines' apply
(engines/base, document, kv, index, compiled together because the first's classes are
subclassed in the others), the tenant's commit, transactions and row values, which
took W1 from 9,792-10,778 to 10,621-12,189 rows/s; then the connection's asyncio shell
(``pgwire/server.py``, once its one async generator became a class, which mypyc
compiles), which took W1 from 14,029 to 14,808 rows/s and W2 from 33,548 to 43,086
(medians of three, interleaved). Under mypyc an annotation is checked at run time, so
what a library hands over is typed as what it is (uvloop's Server is no asyncio one).

Compiled code does not count its recursion against the interpreter's limit. Where a
module recurses over what a client sent, the depth is bounded before it starts:
``sql/expr.py`` refuses an expression deeper than ``MAX_EXPR_DEPTH`` (without that, a
100,000-term OR overflowed the C stack and killed the server; pure Python raised
RecursionError, 54001); values are bounded by the JSON decoder's own limit and the
256 levels a stored value may nest. Nor does compiled code hand the GIL to other
threads every few milliseconds, as the interpreter does: a long loop on a worker
thread gives it up itself (``tenants.catalog.let_others_run``, between replay runs).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

HOT = (
    "nodedb_server.pgwire.messages",
    "nodedb_server.pgwire.connection",
    "nodedb_server.pgwire.values",
    "nodedb_server.sql.session",
    "nodedb_server.sql.exec.rows",
    "nodedb_server.sql.expr",
    "nodedb_server.types",
    "nodedb_server.storage.records",
    "nodedb_server.storage.wal",
    "nodedb_server.storage.codec",
    "nodedb_server.tenants.catalog",
    "nodedb_server.engines.base",
    "nodedb_server.engines.document",
    "nodedb_server.engines.kv",
    "nodedb_server.engines.index",
    "nodedb_server.tenants.tenant",
    "nodedb_server.sql.exec.txn",
    "nodedb_server.sql.exec.values",
    "nodedb_server.pgwire.server",
)
GROUP = "nodedb_server._hot"  # mypyc's shared library of them is GROUP + "__mypyc"
PACKAGE_DIR = Path(__file__).resolve().parent
COMPILED_DIR = PACKAGE_DIR / "_compiled"
DIGEST_FILE = "SOURCES"
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]


def sources_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the path and bytes of every .py file of the package."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):  # _compiled/ holds no .py files
        rel = path.relative_to(package_dir).as_posix()
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def compiled_state(package_dir: Path = PACKAGE_DIR) -> str:
    """Either "compiled" or why the hot path runs as pure Python."""
    if os.environ.get("NODEDB_PURE_PYTHON"):
        return "pure Python (NODEDB_PURE_PYTHON is set)"
    try:
        recorded = (package_dir / "_compiled" / DIGEST_FILE).read_text()
    except OSError:
        return "pure Python (not compiled; make runs tools/compile.py)"
    if recorded != sources_digest(package_dir):
        return "pure Python (compiled from other sources; make rebuilds it)"
    return "compiled"


def extension_path(name: str, compiled_dir: Path = COMPILED_DIR) -> Path:
    """Where the build puts the extension of module ``name``."""
    parts = name.split(".")
    return compiled_dir.joinpath(*parts[:-1], parts[-1] + EXT)


class _CompiledFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        location = extension_path(fullname)
        if not location.exists():
            return None  # a build missing a file: this module runs as Python
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(location))
        return importlib.util.spec_from_file_location(fullname, location, loader=loader)


STATE = "pure Python (not checked)"


def install() -> None:
    """Load the modules of HOT from the build, if it was made from these sources."""
    global STATE
    STATE = compiled_state()
    if STATE == "compiled" and not any(isinstance(f, _CompiledFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _CompiledFinder(frozenset((*HOT, GROUP + "__mypyc"))))
