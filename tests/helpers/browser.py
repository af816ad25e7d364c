"""Headless Chromium driven over the Chrome DevTools Protocol (no Playwright/Selenium): the web demo's
and the review page's browser tests. Chromium is a Debian package (`apt-get install chromium`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `apt-get install chromium` "
                    "(scripts/install_system_deps.sh does it; CI installs it)")
    return exe


class Browser:
    """A headless Chromium process; its DevTools URL is read from stderr."""

    def __init__(self, exe: str, profile: Path, wav: Path) -> None:
        args = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-default-apps", f"--user-data-dir={profile}",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0", "--window-size=1100,900", "about:blank",
        ]
        # Own process group: the launcher script and every Chromium child go down together.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        self.stderr: list[str] = []
        self._url: str | None = None
        self._found = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m and self._url is None:
                self._url = m.group(1)
                self._found.set()
        self._found.set()  # exited (or closed stderr) without a URL

    def devtools_url(self, timeout: float = 30.0) -> str:
        self._found.wait(timeout)
        if self._url is None:
            pytest.fail(f"chromium gave no DevTools URL in {timeout:.0f} s (exit code {self.proc.poll()}):\n"
                        + "".join(self.stderr[-40:]))
        return self._url

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:  # leftovers of the group (renderers, zygotes), even if the launcher already exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class CDP:
    """Minimal Chrome DevTools Protocol client over one browser WebSocket (flattened sessions)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                fut = self.pending.pop(msg["id"], None) if "id" in msg else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif "method" in msg:
                    self.events.append(msg)
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("DevTools connection closed"))

    async def attach_page(self) -> str:
        """A session on the browser's page (made if there is none) with Page, Runtime and Log enabled."""
        targets = (await self.send("Target.getTargets"))["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True}))["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable", session=session)
        return session

    async def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        i = next(self.ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise AssertionError(f"CDP {method} failed: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, session: str, expression: str):
        r = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in r:
            raise AssertionError(f"probe threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    def page_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error-level log entries, except the favicon."""
        out = []
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded":
                e = p.get("entry", {})
                if e.get("level") == "error" and "favicon" not in (e.get("url") or "") + e.get("text", ""):
                    out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url') or ''}".rstrip())
        return out
