"""The browser the page's tests drive: one per module, launched once its `served`
fixture (which checks that Chromium is there) has started the server."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.web.browser import chromium


@pytest.fixture(scope="module")
async def browser(served: str) -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched
