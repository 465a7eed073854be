"""nodedb-server: a multi-model database server speaking the PostgreSQL wire protocol."""

from nodedb_server import _hot

__version__ = "0.1.0"
# What clients are told the server is: PostgreSQL 15's protocol and catalog.
SERVER_VERSION = f"15.0 (nodedb-server {__version__})"

_hot.install()  # the compiled hot path, when built from these sources
