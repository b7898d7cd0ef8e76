from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.running import Host, live_host


@pytest.fixture(scope="package")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """One live exporter + agent shared by the operator's-view tests (they only read)."""
    with live_host(tmp_path_factory.mktemp("ops")) as running:
        yield running
