"""statement_timeout values read as PostgreSQL reads them: milliseconds unless a unit
follows. '30s' once meant 30 ms here (the unit's letters were stripped as ms)."""

from __future__ import annotations

import pytest

from nodedb_server.types import timeout_setting_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("250", 250),
        ("250ms", 250),
        ("30s", 30_000),
        ("30 s", 30_000),
        ("1.5s", 1_500),
        ("2min", 120_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1500us", 2),
    ],
)
def test_units(text: str, ms: int) -> None:
    assert timeout_setting_ms(text) == ms


@pytest.mark.parametrize("text", ["", "abc", "-5", "30S", "5 sec", "1m"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError):
        timeout_setting_ms(text)
