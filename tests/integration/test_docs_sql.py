"""docs/SQL.md is run: every ``sql`` block through the real psql, in order, on one server.

A ``text`` block right after a ``sql`` block is what psql must print on standard output
for it; a ``<!-- expect error CODE -->`` line before a block means the block must stop
with that SQLSTATE. So the page says what the server does, and cannot drift from it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serverproc import ROOT, ServerProcess

DOC = ROOT / "docs" / "SQL.md"
DOC_BACKUP_DIR = "/srv/nodedb/backups"  # the allowed_dirs the page's examples name

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
_EXPECT = re.compile(r"<!-- expect error (\w{5}) -->\s*$")


@dataclass
class Example:
    line: int
    sql: str
    output: str | None
    error: str | None


def examples(text: str) -> Iterator[Example]:
    fences = list(_FENCE.finditer(text))
    for i, m in enumerate(fences):
        if m.group(1) != "sql":
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        expect = _EXPECT.search(before)
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        output = None
        if nxt is not None and nxt.group(1) == "text" and not text[m.end() : nxt.start()].strip():
            output = nxt.group(2)
        yield Example(
            text.count("\n", 0, m.start()) + 1,
            m.group(2),
            output,
            expect.group(1) if expect else None,
        )


def test_the_page_has_examples_of_each_kind() -> None:
    found = list(examples(DOC.read_text()))
    assert len(found) > 20
    assert any(e.output for e in found) and any(e.error for e in found)


@pytest.fixture
def docs_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    config = tmp_path / "nodedb.toml"
    config.write_text(f'[backup]\nallowed_dirs = ["{backups}"]\n')
    srv = ServerProcess(tmp_path / "data", config=config).start()
    try:
        yield srv, backups
    finally:
        srv.kill9()


def test_every_example_in_docs_sql_runs_as_shown(docs_server: tuple[ServerProcess, Path]) -> None:
    srv, backups = docs_server
    for ex in examples(DOC.read_text()):
        script = "\\set VERBOSITY verbose\n" + ex.sql.replace(DOC_BACKUP_DIR, str(backups))
        run = subprocess.run(
            [*srv.psql(), "-v", "ON_ERROR_STOP=1", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=120,
        )
        where = f"docs/SQL.md line {ex.line}"
        if ex.error is not None:
            assert f"ERROR:  {ex.error}:" in run.stderr, f"{where}: {run.stdout}{run.stderr}"
            continue
        assert run.returncode == 0 and "ERROR" not in run.stderr, f"{where}: {run.stderr}"
        if ex.output is not None:
            assert run.stdout == ex.output, f"{where} printed:\n{run.stdout}"


def test_readme_and_docs_link_only_files_a_clone_has() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, f"{page.name} points outside the project"
        for target in re.findall(r"\]\(([^)#:]+)\)", text):
            assert (page.parent / target).exists(), f"{page.name} links a missing {target}"
