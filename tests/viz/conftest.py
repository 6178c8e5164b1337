"""A headless Chromium page driven by Playwright, or a clean skip with the reason."""

import tempfile

import pytest

from tests.viz.browser import FLAGS, find_chromium, skip_reason


@pytest.fixture(scope="module")
def browser_page():
    """Yields ``(page, console_errors)``: a fresh Chromium profile; errors collects console errors and page errors."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip(skip_reason())
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=path, headless=True, args=list(FLAGS[1:]), viewport={"width": 1200, "height": 900}
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda req: errors.append(f"network request: {req.url}") if not req.url.startswith(("file:", "data:", "about:")) else None)
        yield page, errors
        context.close()
