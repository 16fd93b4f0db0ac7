"""pytest fixtures for tests of the HTTP adapters (test support).

Import the fixture into a test module and use it there:

    from worker_adapters.testing.fixtures import http_session  # noqa: F401

    pytestmark = pytest.mark.usefixtures("http_session")
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker_adapters._http import close_shared_session

__all__ = ["http_session"]


@pytest.fixture
async def http_session() -> AsyncIterator[None]:
    """Closes the test loop's shared HTTP session (connection pool) at the end."""
    yield
    await close_shared_session()
