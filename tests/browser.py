"""Headless Chromium for tests, driven from Python with nothing heavier than the standard
library and ``websockets`` (a dependency of uvicorn's): :func:`render` gives a page's DOM after
its script ran (``--dump-dom``) as a small tree of :class:`Element`; :class:`DevTools` drives one
tab over the DevTools protocol, for what needs a live page (typing, waiting for a refresh,
answering a request in the daemon's stead).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(child if isinstance(child, str) else child.text for child in self.children)

    def all(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        """Elements under this one (and itself) of ``tag`` whose attributes match (``None``: present).
        Attribute names take ``_`` for ``-`` (``data_job_id``)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        found = []
        if (tag is None or self.tag == tag) and all(
            name in self.attrs and (value is None or self.attrs[name] == value) for name, value in wanted.items()
        ):
            found.append(self)
        for child in self.children:
            if isinstance(child, Element):
                found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str | None) -> Element:
        [found] = self.all(tag, **attrs)
        return found

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    tree = _Tree()
    tree.feed(html)
    return tree.root


def chromium(url: str, profile: Path, *args: str) -> str:
    """Headless Chromium on ``url`` until the page's script settled (virtual time); its stdout."""
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=4000", *args, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def render(url: str, profile: Path) -> Element:
    """The page's DOM once its first refresh is drawn (``body[data-view]``), tried a few times."""
    for _ in range(3):
        page = parse(chromium(url, profile, "--dump-dom"))
        body = page.one("body")
        if body.attrs.get("data-view"):
            return page
    raise AssertionError("the dashboard drew nothing within Chromium's time budget")


class DevTools:
    """One headless Chromium tab over the DevTools protocol. ``intercept`` answers requests whose
    URL matches a pattern (``*/api/v1/pool*``) with a status and JSON body in the daemon's stead."""

    def __init__(self, profile: Path, timeout_s: float = 30.0):
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.timeout_s = timeout_s
        self.answers: dict[str, tuple[int, dict]] = {}
        self._closing = ExitStack()
        self._next_id = 0
        try:
            port = self._wait(lambda: (profile / "DevToolsActivePort").is_file() and (profile / "DevToolsActivePort").read_text().split()[0])
            pages = self._wait(lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"])
            self.socket = self._closing.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None))
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _wait(self, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                if found := check():
                    return found
            except (OSError, httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"Chromium did not come up within {self.timeout_s} s")

    def call(self, method: str, **params: Any) -> dict:
        """Send one command; its result (events meanwhile are handled: intercepted requests answered)."""
        self._next_id += 1
        ident = self._next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            if message.get("method") == "Fetch.requestPaused":
                self._answer(message["params"])

    def _answer(self, paused: dict) -> None:
        url = paused["request"]["url"]
        status, body = next(answer for pattern, answer in self.answers.items() if pattern.strip("*") in url)
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": "Fetch.fulfillRequest", "params": {
            "requestId": paused["requestId"], "responseCode": status,
            "responseHeaders": [{"name": "Content-Type", "value": "application/json"}],
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
        }}))

    def intercept(self, pattern: str, status: int, body: dict) -> None:
        self.answers[pattern] = (status, body)
        self.call("Fetch.enable", patterns=[{"urlPattern": p} for p in self.answers])

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def until(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. Until then it may throw: the
        page may still be loading (no ``document.body`` yet)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                if value := self.evaluate(expression):
                    return value
            except AssertionError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"not within {timeout_s} s: {expression} (last error: {last})")

    def dom(self) -> Element:
        return parse(self.evaluate("document.documentElement.outerHTML"))

    def close(self) -> None:
        self._closing.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
