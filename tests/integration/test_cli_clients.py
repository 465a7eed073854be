"""Real command-line and Node.js clients against a real server: pgcli with the default
config it writes on first start (interactive on a pseudo-terminal, and -c), and
node-postgres with pg-copy-streams doing COPY FROM STDIN and COPY TO STDOUT."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.serverproc import ServerProcess

PGCLI = Path(sys.executable).with_name("pgcli")  # the venv's: pyproject.toml's test extra
JS = Path(__file__).resolve().parent.parent / "js"
# A zone other than the server's UTC, so pgcli's start-up sends SET TIME ZONE.
LOCAL_ZONE = "Europe/Berlin"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("cli") / "data").start()
    yield srv
    srv.kill9()


def pgcli_env(home: Path) -> dict[str, str]:
    """A first start: no config, history or log of pgcli's yet, so it writes its default
    config under the fresh XDG_CONFIG_HOME and reads nothing of the user's."""
    home.mkdir()
    # libpq's PG* settings, a pager's, and the colour switches would change what pgcli
    # does or draws (the interactive test reads its coloured completion menu).
    dropped = ("PG", "LESS", "NO_COLOR", "PROMPT_TOOLKIT_", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return {
        **env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "TZ": LOCAL_ZONE,
        "TERM": "xterm",
        "PAGER": "cat",
    }


def pgcli_args(srv: ServerProcess) -> list[str]:
    return [str(PGCLI), "-h", "127.0.0.1", "-p", str(srv.port), "-U", "nodedb", "-w", "nodedb"]


def assert_clean_start(home: Path) -> None:
    """pgcli wrote its default config on this first start, and its log has no error."""
    config_dir = home / ".config" / "pgcli"
    config = (config_dir / "config").read_text()
    assert "[main]" in config and "multi_line = False" in config
    log = (config_dir / "log").read_text()
    assert "Traceback" not in log and " ERROR - " not in log, log


class Terminal:
    """A program on a pseudo-terminal, as a user at a terminal runs it: what it writes is
    read as it comes, and its cursor position requests are answered."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        os.close(slave)
        self.screen = b""  # everything written to the terminal so far
        self.seen = 0  # how much of it wait_for has matched past

    def write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, pattern: bytes, timeout: float = 30.0) -> bytes:
        """The output since the last match, up to and including ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.screen, self.seen)
            if m:
                got, self.seen = self.screen[self.seen : m.end()], m.end()
                return got
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(
                    f"no {pattern!r} in pgcli's output:\n{self.screen[self.seen :].decode(errors='replace')}"
                )

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], min(timeout, 0.5))
        if not ready:
            return self.proc.poll() is None
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the program closed the terminal
            return False
        if b"\x1b[6n" in data:  # where is the cursor? (prompt_toolkit asks at each prompt)
            self.write("\x1b[1;1R")
        self.screen += data
        return bool(data)

    def close(self, timeout: float = 15.0) -> tuple[int | None, str]:
        """Wait for the program to exit (killed after ``timeout``): its exit status (None
        if it had to be killed) and what it wrote to stderr."""
        deadline = time.monotonic() + timeout
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                self._read(0.5)
            while self.proc.poll() is not None and self._read(0.1):
                pass  # what it wrote before it exited
            code = self.proc.poll()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            os.close(self.master)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        return code, err

    def run(self, sql: str) -> str:
        """Type ``sql`` and Enter: what the terminal shows up to pgcli's timing line."""
        self.write(sql + "\r")
        return plain(self.wait_for(rb"Time: [0-9.]+s"))


PROMPT = rb"nodedb@127\.0\.0\.1:nodedb>"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def plain(b: bytes) -> str:
    return ANSI.sub(b"", b).decode(errors="replace").replace("\r", "")


def test_pgcli_interactive_with_its_default_config(server: ServerProcess, tmp_path: Path) -> None:
    """pgcli's whole start-up (SHOW TIME ZONE, SET TIME ZONE "Europe/Berlin", then in the
    background its completion refresh: search path, schemata, tables, columns, foreign
    keys, views, types, databases, functions) runs without an error; statements typed at
    its prompt run; the refreshed completions offer the new collection; Ctrl-D quits."""
    home = tmp_path / "home"
    term = Terminal(pgcli_args(server), pgcli_env(home))
    try:
        start = plain(term.wait_for(PROMPT))
        assert f"Using local time zone {LOCAL_ZONE} (server uses UTC)" in start
        assert "Server: PostgreSQL 15.0 (nodedb-server" in start
        assert "CREATE COLLECTION" in term.run("CREATE COLLECTION cli_people")
        assert "INSERT 0 1" in term.run("INSERT INTO cli_people {id: 'p1', name: 'Ada', n: 36}")
        table = term.run("SELECT id, name, n FROM cli_people")
        assert re.search(r"\|\s*id\s*\|\s*name\s*\|\s*n\s*\|", table), table
        assert re.search(r"\|\s*p1\s*\|\s*Ada\s*\|\s*36\s*\|", table), table
        assert "SELECT 1" in table
        # The completion menu offers a table only from the catalog the refresh read, and
        # an unqualified one only when its search path (SELECT * FROM
        # unnest(current_schemas(true))) holds public. The refresh runs in a thread: until
        # it has finished the menu offers nothing, so the line is typed again.
        deadline = time.monotonic() + 20
        while True:
            term.write("SELECT name FROM cli_peo")
            try:
                # the item as the menu draws it: " cli_people " then " table ", where an
                # empty search path would give " public.cli_people "
                term.wait_for(rb"m cli_people\s*(\x1b\[[0-9;]*m)+\s*table ", timeout=2)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            finally:
                term.write("\x15")  # Ctrl-U: an empty line again
        term.write("\x04")  # Ctrl-D
        term.wait_for(rb"Goodbye!")
    except BaseException:
        _, err = term.close()
        print(f"pgcli's stderr:\n{err}")  # pytest shows it with the failure
        raise
    code, err = term.close()
    assert code == 0, err
    assert "Traceback" not in err and "Exception" not in err, err
    assert "Traceback" not in plain(term.screen), plain(term.screen)
    assert_clean_start(home)


def test_pgcli_runs_commands_and_exits(server: ServerProcess, tmp_path: Path) -> None:
    """pgcli -c, like psql -c: connects (with the same time zone start-up), runs each
    command, prints the result table and exits 0 with nothing on stderr."""
    home = tmp_path / "home"
    out = subprocess.run(
        [
            *pgcli_args(server),
            "-c",
            "CREATE COLLECTION cli_books",
            "-c",
            "INSERT INTO cli_books {id: 'b1', title: 'Dune', year: 1965}",
            "-c",
            "SELECT id, title, year FROM cli_books",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=pgcli_env(home),
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "CREATE COLLECTION" in out.stdout and "INSERT 0 1" in out.stdout
    assert re.search(r"\|\s*b1\s*\|\s*Dune\s*\|\s*1965\s*\|", out.stdout), out.stdout
    assert "SELECT 1" in out.stdout
    assert_clean_start(home)


def test_pgcli_completion_queries_answer(server: ServerProcess) -> None:
    """The catalog queries of pgcli's completion refresh, sent by pgcli's own PGExecute,
    one by one: each answers (none raises, as the functions query's
    ``proargtypes::regtype[]`` did) and the search path is PostgreSQL's."""
    from pgcli.pgexecute import PGExecute

    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("CREATE COLLECTION cli_cols")
        c.execute("INSERT INTO cli_cols {id: 'x', label: 'one'}")
    ex = PGExecute("nodedb", "nodedb", None, "127.0.0.1", server.port, None)
    try:
        # SELECT * FROM unnest(current_schemas(true))
        assert ex.search_path() == ["pg_catalog", "public"]
        assert {"pg_catalog", "public"} <= set(ex.schemata())
        assert ("public", "cli_cols") in list(ex.tables())
        columns = {c[2] for c in ex.table_columns() if c[:2] == ("public", "cli_cols")}
        assert {"id", "label"} <= columns
        assert list(ex.foreignkeys()) == []
        assert ("public", "cli_cols") not in list(ex.views())
        list(ex.view_columns())
        list(ex.datatypes())
        assert ex.databases() == ["nodedb"]
        assert all(f.func_name for f in ex.functions())
    finally:
        ex.conn.close()


def node_copy(srv: ServerProcess, data: str, copy_in: str, copy_out: str) -> dict[str, object]:
    """tests/js/copy.js: ``data`` into COPY_IN with pg-copy-streams' from, in 7-byte
    CopyData messages, then what COPY_OUT sends through its to."""
    out = subprocess.run(
        ["node", str(JS / "copy.js"), str(srv.port), copy_in, copy_out],
        input=data.encode(),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_node_pg_copy_streams_csv_round_trip(server: ServerProcess) -> None:
    """CSV with a header into a document collection: quoting, an embedded quote and comma,
    a line break in a value, multi-byte characters cut across CopyData messages, and an
    empty unquoted value for NULL; COPY TO STDOUT gives the same records back."""
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("CREATE COLLECTION js_people")
        c.execute("INSERT INTO js_people {id: '0', name: 'seed', n: 0}")  # n holds int8
    data = 'id,name,n\na,"Zoë, the ""first""",1\nb,"two\nlines",2\nc,日本語テキスト,3\nd,,4\n'
    got = node_copy(
        server,
        data,
        "COPY js_people (id, name, n) FROM STDIN WITH (FORMAT csv, HEADER)",
        "COPY js_people (id, name, n) TO STDOUT WITH (FORMAT csv, HEADER)",
    )
    assert (got["copiedIn"], got["copiedOut"]) == (4, 5)
    assert isinstance(got["data"], str)
    header, *records = csv.reader(io.StringIO(got["data"], newline=""))
    assert header == ["id", "name", "n"]
    assert sorted(records) == [
        ["0", "seed", "0"],
        ["a", 'Zoë, the "first"', "1"],
        ["b", "two\nlines", "2"],
        ["c", "日本語テキスト", "3"],
        ["d", "", "4"],
    ]
    with psycopg.connect(server.dsn()) as c:
        rows = c.execute("SELECT id, name, n FROM js_people ORDER BY id").fetchall()
    assert rows == [
        ("0", "seed", 0),
        ("a", 'Zoë, the "first"', 1),
        ("b", "two\nlines", 2),
        ("c", "日本語テキスト", 3),
        ("d", None, 4),
    ]


def test_node_pg_copy_streams_text_round_trip(server: ServerProcess) -> None:
    """Text format into a key-value collection: backslash escapes (tab, newline,
    backslash) and \\N for NULL, read back in the same form; a duplicate key fails the
    whole COPY with 23505 and loads nothing."""
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute("CREATE COLLECTION js_kv TYPE KEY_VALUE (key TEXT PRIMARY KEY, hits INT8)")
    data = "k1\t5\ta\\tb\nk2\t\\N\tline\\none\nk3\t-7\tback\\\\slash\nk4\t0\t\\N\n"
    got = node_copy(
        server,
        data,
        "COPY js_kv (key, hits, note) FROM STDIN",
        "COPY js_kv (key, hits, note) TO STDOUT",
    )
    assert (got["copiedIn"], got["copiedOut"]) == (4, 4)
    assert isinstance(got["data"], str)
    assert sorted(got["data"].splitlines(keepends=True)) == data.splitlines(keepends=True)
    with psycopg.connect(server.dsn()) as c:
        rows = c.execute("SELECT key, hits, note FROM js_kv ORDER BY key").fetchall()
    assert rows == [
        ("k1", 5, "a\tb"),
        ("k2", None, "line\none"),
        ("k3", -7, "back\\slash"),
        ("k4", 0, None),
    ]

    out = subprocess.run(
        [
            "node",
            str(JS / "copy.js"),
            str(server.port),
            "COPY js_kv (key, hits) FROM STDIN",
            "COPY js_kv TO STDOUT",
        ],
        input=b"k9\t1\nk1\t2\n",
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.decode().startswith("23505 "), out.stderr.decode()
    with psycopg.connect(server.dsn()) as c:
        assert c.execute("SELECT count(*) FROM js_kv WHERE key = 'k9'").fetchone() == (0,)
