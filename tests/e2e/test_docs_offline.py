"""``/docs`` and ``/redoc`` render in a browser that can reach nothing but Berth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.chromium import PNG_MAGIC, chromium
from tests.stack import Stack

pytestmark = pytest.mark.integration

# Every host name fails to resolve and every address but loopback is refused:
# a page that needed a CDN would render empty.
OFFLINE = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
)


def test_docs_pages_reference_no_outside_host(stack: Stack) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{stack.url}{page}", timeout=10).text
        assert "cdn." not in html and "https://" not in html, html
        assert "/docs-assets/" in html
    asset = httpx.get(f"{stack.url}/docs-assets/swagger-ui-bundle.js", timeout=10)
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_swagger_ui_renders_berths_operations_with_no_internet(
    stack: Stack, tmp_path: Path
) -> None:
    dom = chromium(tmp_path, *OFFLINE, "--dump-dom", f"{stack.url}/docs").decode()
    # Swagger UI builds these only once its script ran and read /openapi.json.
    assert 'class="opblock-tag' in dom, dom[-2000:]
    assert "/api/projects/{project}/runs" in dom
    screenshot = tmp_path / "docs.png"
    chromium(
        tmp_path,
        *OFFLINE,
        f"--screenshot={screenshot}",
        "--window-size=1280,900",
        f"{stack.url}/docs",
    )
    png = screenshot.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000, len(png)


def test_redoc_renders_with_no_internet(stack: Stack, tmp_path: Path) -> None:
    dom = chromium(tmp_path, *OFFLINE, "--dump-dom", f"{stack.url}/redoc").decode()
    assert "/api/projects/{project}/runs" in dom, dom[-2000:]
