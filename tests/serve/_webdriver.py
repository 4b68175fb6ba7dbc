"""A small W3C WebDriver client (httpx) driving Debian's headless chromium through chromedriver.

Only what the playground tests use: open a page, find elements, type (real key events), click,
run a script, take screenshots.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriverError(RuntimeError):
    """A WebDriver command failed."""


class Element(str):
    """An element reference (passed to scripts as the element itself)."""


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


class Browser:
    """One headless chromium session."""

    def __init__(self, http: httpx.Client, session: str) -> None:
        self.http = http
        self.base = f"/session/{session}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.base + path, json=body)
        value = response.json().get("value")
        if response.status_code >= 400:
            message = value.get("message", "") if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path} failed: {str(message)[:500]}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> Element:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        return Element(found[ELEMENT])

    def click(self, element: str) -> None:
        self._call("POST", f"/element/{element}/click", {})

    def clear(self, element: str) -> None:
        self._call("POST", f"/element/{element}/clear", {})

    def send_keys(self, element: str, text: str) -> None:
        self._call("POST", f"/element/{element}/value", {"text": text})

    def text(self, element: str) -> str:
        return str(self._call("GET", f"/element/{element}/text"))

    def run(self, script: str, *args: Any) -> Any:
        """The value of `script` (a function body; `arguments` holds args) run in the page."""
        refs = [{ELEMENT: str(a)} if isinstance(a, Element) else a for a in args]
        return self._call("POST", "/execute/sync", {"script": script, "args": refs})

    def wait(self, script: str, *args: Any, timeout: float = 20.0) -> Any:
        """Run `script` until it returns a truthy value; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise WebDriverError(f"timed out after {timeout} s waiting for: {script}")
            time.sleep(0.05)

    def console_errors(self) -> list[str]:
        """The page's console errors (script errors, policy violations) since the last call."""
        entries = self._call("POST", "/se/log", {"type": "browser"})
        return [str(e["message"]) for e in entries if e.get("level") == "SEVERE"]

    def screenshot(self, path: Path, element: str | None = None) -> Path:
        """A PNG of the viewport (or of one element) written to `path`."""
        where = f"/element/{element}/screenshot" if element else "/screenshot"
        path.write_bytes(base64.b64decode(self._call("GET", where)))
        return path


@contextmanager
def chromium(
    chromium_path: str, driver_path: str, port: int, width: int = 1200, height: int = 900
) -> Iterator[Browser]:
    """A headless chromium session behind a chromedriver on `port` (both ended on exit)."""
    profile = tempfile.mkdtemp(prefix="playground-chromium-")
    driver = subprocess.Popen(
        [driver_path, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    session = None
    try:
        _wait_ready(http, driver)
        options = {
            "binary": chromium_path,
            "args": [
                "--headless=new",
                "--no-sandbox",  # tests run as root in CI
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--lang=en-US",
                f"--window-size={width},{height}",
                f"--user-data-dir={profile}",
            ],
        }
        logs = {"browser": "ALL"}  # the page's console, read by console_errors()
        caps = {
            "capabilities": {
                "alwaysMatch": {"goog:chromeOptions": options, "goog:loggingPrefs": logs}
            }
        }
        response = http.post("/session", json=caps)
        if response.status_code >= 400:
            raise WebDriverError(f"chromium did not start: {response.text[:500]}")
        session = response.json()["value"]["sessionId"]
        yield Browser(http, session)
    finally:
        if session is not None:
            with suppress(httpx.HTTPError):
                http.delete(f"/session/{session}")
        http.close()
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def _wait_ready(http: httpx.Client, driver: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise WebDriverError(f"chromedriver exited with {driver.returncode}.")
        try:
            if http.get("/status", timeout=1).json()["value"]["ready"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise WebDriverError(f"chromedriver not ready after {timeout} s.")
