"""Compile the statement hot path with mypyc, and every module to bytecode; ``make run``
and ``make test`` run this.

What is compiled, and when the package uses it, is said in ``nodedb_server/_hot.py``.
The build is skipped when ``_compiled/`` was made from the current sources. Any
failure (no C compiler, no Python headers, a mypyc error) leaves the pure Python
modules in use: this prints why and exits 0, so the server still starts.
"""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodedb_server import _hot  # noqa: E402

# Run from the checkout, so that mypy reads the project's own settings
# (pyproject.toml); the build directories are a temporary one's.
SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(
    name="nodedb-hot",
    py_modules=[],
    ext_modules=mypycify(sys.argv[1:-6], group_name={group!r}, target_dir=sys.argv[-6]),
    script_args=sys.argv[-5:],
)
"""


def main() -> int:
    # Bytecode for every module, written now: where PYTHONDONTWRITEBYTECODE is set (as
    # in many containers) each start would otherwise compile the package's sources
    # again, 0.1 s of a restart's 0.5 s. Python still checks each against its source.
    compileall.compile_dir(ROOT / "nodedb_server", quiet=1)
    if os.environ.get("NODEDB_PURE_PYTHON"):
        print("compile: NODEDB_PURE_PYTHON is set; the hot path runs as Python")
        return 0
    if _hot.compiled_state() == "compiled":
        return 0  # built from these sources already
    digest = _hot.sources_digest()
    shutil.rmtree(_hot.COMPILED_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="nodedb-mypyc-") as tmp:
        work = Path(tmp)
        (work / "setup.py").write_text(SETUP.format(group=_hot.GROUP))
        sources = [name.replace(".", "/") + ".py" for name in _hot.HOT]  # as mypyc is given them
        args = ["build_ext", "--build-lib", str(work / "out"), "--build-temp", str(work / "tmp")]
        print(f"compile: mypyc, {len(sources)} modules (about a minute) ...", flush=True)
        try:
            run = subprocess.run(
                [sys.executable, str(work / "setup.py"), *sources, str(work / "c"), *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return _fallback(str(e))
        if run.returncode != 0:
            return _fallback((run.stdout + run.stderr).strip().splitlines()[-20:])
        wanted = [*_hot.HOT, _hot.GROUP + "__mypyc"]
        missing = [n for n in wanted if not _hot.extension_path(n, work / "out").exists()]
        if missing:
            return _fallback(f"the build made no extension for {', '.join(missing)}")
        staging = _hot.COMPILED_DIR.with_name("_compiled.new")
        shutil.rmtree(staging, ignore_errors=True)
        for name in wanted:
            target = _hot.extension_path(name, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_hot.extension_path(name, work / "out"), target)
        (staging / _hot.DIGEST_FILE).write_text(digest)  # last: only a whole build counts
        staging.rename(_hot.COMPILED_DIR)
    print(f"compile: built {len(wanted)} extensions in {_hot.COMPILED_DIR.relative_to(ROOT)}")
    return 0


def _fallback(why: object) -> int:
    lines = why if isinstance(why, list) else [str(why)]
    print("compile: the mypyc build failed; the hot path runs as pure Python:")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
