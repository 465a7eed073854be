"""``nodedb-server [--config FILE] [--host H] [--port P] [--data-dir DIR] [--recover-from-storage]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from nodedb_server import __version__
from nodedb_server.config import load_config
from nodedb_server.errors import ConfigError


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    try:
        import uvloop
    except ImportError:  # the standard event loop works, only slower
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nodedb-server", description=__doc__)
    ap.add_argument("--config", help="TOML configuration file")
    ap.add_argument("--host", help="address to listen on (server.host)")
    ap.add_argument("--port", type=int, help="PostgreSQL port (server.ports.pgwire)")
    ap.add_argument("--data-dir", help="data directory (server.data_dir)")
    ap.add_argument(
        "--recover-from-storage",
        action="store_true",
        help="rebuild an empty data directory from snapshot storage and the WAL archive, "
        "then start",
    )
    ap.add_argument("--version", action="version", version=f"nodedb-server {__version__}")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(
            args.config,
            {
                "server.host": args.host,
                "server.ports.pgwire": args.port,
                "server.data_dir": args.data_dir,
            },
        )
    except ConfigError as e:
        print(f"nodedb-server: configuration error: {e}", file=sys.stderr)
        return 2
    from nodedb_server.server import StartupRefused, run, setup_logging
    from nodedb_server.storage.datadir import DataDirInUse
    from nodedb_server.tenants.rebuild import RebuildRefused, recover_from_storage

    async def rebuild_then_run() -> int:
        await recover_from_storage(cfg)
        return await run(cfg)

    setup_logging(cfg)
    try:
        return int(
            _event_loop_runner()(rebuild_then_run() if args.recover_from_storage else run(cfg))
        )
    except ConfigError as e:
        logging.getLogger("nodedb.server").error("configuration error: %s", e)
        return 2
    except (StartupRefused, DataDirInUse, RebuildRefused) as e:
        logging.getLogger("nodedb.server").error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 0
