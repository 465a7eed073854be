"""Which layer of the package may import which, read from the import statements of the
source files (every import, including ones inside functions).

A layer is the first name under ``nodedb_server``: a subpackage (``storage``) or a
top-level module (``types``, ``errors``). Lower layers must not import higher ones:
storage/ knows nothing of tenants or engines, engines/ nothing of tenants, and
tenants/ nothing of backups, SQL or the wire protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "nodedb_server"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

# layer -> layers it must not import
FORBIDDEN = {
    "tenants": {"backup", "sql", "pgwire"},
    "storage": {"tenants", "engines", "sql", "pgwire", "backup"},
    "engines": {"tenants", "sql", "pgwire", "backup"},
    "objectstore": {"storage", "tenants", "engines", "sql", "pgwire", "backup"},
}
# layer -> the only layers of the package it may import
ONLY = {
    "types": {"errors"},
    "errors": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer a dotted module name is in; None for the package itself or outside it."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every module of the package that ``source`` imports. For
    ``from nodedb_server import x`` the name is ``nodedb_server.x``, whether x is a module
    or a name in ``__init__``: layer_of tells them apart only by name, which is enough,
    since ``__init__`` defines no layer names."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted((line, name) for line, name in found if name.split(".")[0] == PACKAGE)


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = module_name(path)
        layer = layer_of(module)
        if layer is None:
            continue
        is_package = path.name == "__init__.py"
        for line, name in imported_modules(path.read_text(), module, is_package):
            target = layer_of(name)
            if target is None or target == layer:
                continue
            if target in FORBIDDEN.get(layer, set()) or (
                layer in ONLY and target not in ONLY[layer]
            ):
                rel = path.relative_to(PACKAGE_DIR.parent)
                out.append(f"{rel}:{line} imports {name}: {layer} must not import {target}")
    return out


def test_no_layer_imports_one_it_must_not() -> None:
    assert violations() == []


def test_the_scan_reads_every_kind_of_import() -> None:
    source = (
        "import nodedb_server.sql.parse\n"
        "from nodedb_server.backup.progress import Progress\n"
        "from nodedb_server import types as t\n"
        "from ..pgwire import messages\n"
        "from .codec import pack\n"
        "import msgpack\n"
        "def later():\n"
        "    from nodedb_server.tenants import keys\n"
    )
    found = imported_modules(source, "nodedb_server.storage.wal")
    assert [layer_of(name) for _, name in found] == [
        "sql",
        "backup",
        "types",
        "pgwire",
        "storage",
        "tenants",
    ]
    assert [line for line, _ in found] == [1, 2, 3, 4, 5, 8]


def test_the_scan_covers_the_whole_package() -> None:
    layers = {layer_of(module_name(p)) for p in PACKAGE_DIR.rglob("*.py")}
    assert {"storage", "engines", "tenants", "backup", "sql", "pgwire", "types", "errors"} <= layers
