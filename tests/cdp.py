"""Debian's headless Chromium driven over the DevTools protocol, for pages that live.

A page is loaded, scripted and read as a person's browser would (cookies, server-sent
events, fetch streams), without a test driver package: the protocol is JSON over a
websocket (websocket-client), and Chromium says its port in ``DevToolsActivePort``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import websocket

from tests.chromium import CHROMIUM_FLAGS
from tests.polling import wait_until

_FLAGS = tuple(f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget"))
_CALL_TIMEOUT_S = 30.0


class Browser:
    """One Chromium with a fresh profile and one page; :meth:`close` stops it by PID."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("chromium")
        assert binary is not None, "Debian's chromium is missing: run scripts/install.sh"
        self.profile = directory / f"cdp-profile-{os.getpid()}-{time.monotonic_ns()}"
        self.process = subprocess.Popen(
            [
                binary,
                *_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        try:
            port = wait_until(self._port, timeout=30, what="Chromium's DevTools port")
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            target = next(p for p in pages if p["type"] == "page")
            self.ws = websocket.create_connection(
                target["webSocketDebuggerUrl"], timeout=_CALL_TIMEOUT_S, suppress_origin=True
            )
        except BaseException:
            self.close()
            raise
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + _CALL_TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
        raise AssertionError(f"{method}: no answer in {_CALL_TIMEOUT_S:.0f} s")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_until(
            lambda: (
                self.evaluate("document.readyState") == "complete"
                and self.evaluate("location.href") != "about:blank"
            ),
            timeout=30,
            what=f"{url} loaded",
        )

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, what: str = "") -> Any:
        return wait_until(
            lambda: self.evaluate(expression) or None, timeout=timeout, what=what or expression
        )

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if hasattr(self, "ws"):
            with contextlib.suppress(OSError, websocket.WebSocketException):
                self.ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _port(self) -> int | None:
        if self.process.poll() is not None:
            raise AssertionError(f"chromium exited with {self.process.returncode}")
        active = self.profile / "DevToolsActivePort"
        if not active.exists():
            return None
        first = active.read_text().splitlines()[:1]
        return int(first[0]) if first and first[0].isdigit() else None
