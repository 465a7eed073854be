"""The hot path compiled with mypyc (nodedb_server/_hot.py), and when it is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from nodedb_server import _hot
from nodedb_server._hot import DIGEST_FILE, compiled_state, sources_digest


def test_a_build_is_used_only_while_it_matches_every_source(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NODEDB_PURE_PYTHON", raising=False)
    pkg = tmp_path / "nodedb_server"
    shutil.copytree(
        _hot.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("_compiled*", "__pycache__")
    )
    assert compiled_state(pkg).startswith("pure Python (not compiled")
    (pkg / "_compiled").mkdir()
    (pkg / "_compiled" / DIGEST_FILE).write_text(sources_digest(pkg))
    assert compiled_state(pkg) == "compiled"
    # An edit anywhere in the package, compiled module or not, makes the build stale:
    # the sources run as Python until the next build.
    for edited in ("pgwire/values.py", "engines/kv.py"):
        with (pkg / edited).open("a") as f:
            f.write("\n# edited\n")
        assert compiled_state(pkg).startswith("pure Python (compiled from other sources")
        (pkg / "_compiled" / DIGEST_FILE).write_text(sources_digest(pkg))
        assert compiled_state(pkg) == "compiled"
    (pkg / "new_module.py").write_text("X = 1\n")
    assert compiled_state(pkg).startswith("pure Python (compiled from other sources")
    monkeypatch.setenv("NODEDB_PURE_PYTHON", "1")
    assert compiled_state(pkg).startswith("pure Python (NODEDB_PURE_PYTHON")


def _can_compile() -> bool:
    include = Path(sysconfig.get_paths()["include"])
    return shutil.which("cc") is not None and (include / "Python.h").exists()


def _loaded_files(env: dict[str, str]) -> list[str]:
    code = "import importlib; " + "; ".join(
        f"print(importlib.import_module({name!r}).__file__)" for name in _hot.HOT
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.split()


def test_make_builds_the_hot_path_where_a_compiler_is_there() -> None:
    """``make test`` ran tools/compile.py first. With a C compiler and the Python headers
    the modules of HOT load as extensions; without, as their .py files, saying why."""
    env = {k: v for k, v in os.environ.items() if k != "NODEDB_PURE_PYTHON"}
    expect_compiled = _can_compile()
    state = subprocess.run(
        [sys.executable, "-c", "from nodedb_server import _hot; print(_hot.STATE)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert (state == "compiled") is expect_compiled, state
    files = _loaded_files(env)
    assert len(files) == len(_hot.HOT)
    for f in files:
        assert f.endswith(".py") is not expect_compiled, (state, f)
    pure = _loaded_files({**env, "NODEDB_PURE_PYTHON": "1"})
    assert len(pure) == len(_hot.HOT) and all(f.endswith(".py") for f in pure), pure
