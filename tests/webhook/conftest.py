"""Fixtures for the webhook tests: a real OPA server loaded with the admission policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.services import OpaServer
from tests.webhook import reviews


@pytest.fixture(scope="session")
def opa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    """`opa run --server` with policies/admission and the golden configuration."""
    workdir: Path = tmp_path_factory.mktemp("opa")
    server = OpaServer(workdir, {"gitwarden": {"admission": reviews.golden()["config"]}})
    server.start()
    try:
        yield server
    finally:
        server.stop()
