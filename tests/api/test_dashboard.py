"""The dashboard's files as the daemon serves them: no token needed (they carry no data), a
policy that lets the page run only its own script, nothing cached across an upgrade, and none
of it in the API's OpenAPI document. What the page draws is tests/test_dashboard_browser.py's."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from poold.api.routes.dashboard import FILES


@pytest.fixture
def anonymous(api) -> TestClient:
    api.auth = None
    return api


@pytest.mark.parametrize(("path", "file", "media"), [
    ("/", "index.html", "text/html"),
    ("/dashboard/app.js", "app.js", "text/javascript"),
    ("/dashboard/style.css", "style.css", "text/css"),
])
def test_each_file_is_served_as_it_is_in_the_package_with_its_headers(anonymous, path, file, media):
    response = anonymous.get(path)
    assert response.status_code == 200
    assert response.content == (FILES / file).read_bytes()
    assert response.headers["content-type"].startswith(media)
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["connect-src"] == "'self'"
    assert "unsafe" not in response.headers["content-security-policy"]


def test_the_page_has_no_inline_script_or_style_and_nothing_from_elsewhere():
    page = (FILES / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/dashboard/app.js" defer>']
    assert "<style" not in page and " style=" not in page and re.search(r"\son\w+=", page) is None
    assert re.search(r"(src|href)=\"(https?:)?//", page) is None


def test_the_script_puts_no_data_into_html():
    script = (FILES / "app.js").read_text()
    assert re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", script) is None


def test_an_unknown_file_is_404_and_none_of_it_is_in_the_api_document(anonymous):
    assert anonymous.get("/dashboard/app.py").status_code == 404
    assert anonymous.get("/dashboard/../app.py").status_code == 404
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/dashboard") for path in paths)
    assert "/api/v1/events" in paths
