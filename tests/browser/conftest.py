"""Fixtures: one headless Chromium and the player page's own origin, per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.player import WEB_DIR, Browser, StaticServer, missing_vendor_files


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    try:
        chromium = Browser()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="session")
def web_origin() -> Iterator[str]:
    """The player page (src/smoothlive/web) served from a loopback origin of its own.

    Media comes from another origin (the smoothlive server, or a test's own
    static server), so every play exercises CORS as a page elsewhere would.
    """
    missing = missing_vendor_files()
    if missing:
        pytest.fail(f"{WEB_DIR}/vendor lacks {', '.join(missing)}: run `make web`")
    server = StaticServer(WEB_DIR)
    try:
        yield server.url
    finally:
        server.close()
