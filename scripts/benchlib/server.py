"""A ``dauys serve`` subprocess for a bench: start it, wait until it is ready, read its log, stop it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from .common import ROOT, BenchError, say
from .stats import median, ms, p95


class ServerProcess:
    """`python -m server serve --port 0` as a subprocess; its output is drained by a thread."""

    LISTEN = re.compile(r"^dauys: listening on .*?(ws://\S+/v1/voice)")

    def __init__(self, extra_args: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = dict(os.environ, DAUYS_ASR__DOWNLOAD="false", PYTHONUNBUFFERED="1", **(extra_env or {}))
        cmd = [sys.executable, "-m", "server", "serve", "--port", "0", *extra_args]
        say("starting: " + " ".join(cmd[1:]))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready_line: str | None = None
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="server-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._changed:
                self.lines.append(line)
                m = self.LISTEN.match(line)
                if m:
                    self.url = m.group(1)
                if line.startswith("dauys: ready:"):
                    self.ready_line = line
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.url and self.ready_line):
                if self.proc.poll() is not None or any(ln.startswith("dauys: error:") for ln in self.lines):
                    status = self.proc.poll()
                    how = "it exited with status %s" % status if status is not None else "it reported an error"
                    raise BenchError(f"the server failed to start ({how}):\n" + self.tail(), 2)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"the server was not ready after {timeout:.0f}s:\n" + self.tail(), 2)
                self._changed.wait(min(left, 0.5))
        say(self.ready_line)
        return self.url

    PREFILLED = "fixed sentences pre-synthesised"
    """The server's log line once the speech of its fixed texts is made (tts.prefill, in the background)."""

    def wait_settled(self, timeout: float = 120.0) -> None:
        """Wait until the server's background start-up work is over: the fixed texts' speech
        (``tts.prefill``; seconds of CPU) would otherwise compete with the first timed calls. Returns
        at once when the server does not prefill (no such line comes: it waits ``timeout`` at most)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(self.PREFILLED in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    say("the server's fixed-text speech was not reported made; going on")
                    return
                self._changed.wait(min(left, 0.5))

    def tail(self, n: int = 25) -> str:
        return "\n".join("    " + ln for ln in self.lines[-n:])

    def stop(self, timeout: float = 30.0) -> None:  # > the server's default shutdown_grace_s (15 s)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"the server did not stop within {timeout:.0f}s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


# A final as the server logs it (pipeline/session.py): its own decode and endpoint->final timings.
SERVER_FINAL = re.compile(r"decode ([0-9.]+)s, endpoint->final ([0-9.]+)s")
SERVER_TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|exception", re.I)


def server_log_summary(lines: list[str]) -> dict:
    """What the server logged over a run: its finals' own decode and endpoint->final times
    (median, p95) and the first 20 warnings or errors."""
    finals = [tuple(map(float, m.groups())) for m in map(SERVER_FINAL.search, lines) if m]
    decode, endpoint = [d for d, _ in finals], [e for _, e in finals]
    return {
        "finals": len(finals),
        "decode_ms_median": ms(median(decode)),
        "decode_ms_p95": ms(p95(decode)),
        "endpoint_to_final_ms_median": ms(median(endpoint)),
        "endpoint_to_final_ms_p95": ms(p95(endpoint)),
        "trouble": [ln for ln in lines if SERVER_TROUBLE.search(ln)][:20],
    }


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


METRIC_LINE = re.compile(r"^(\w+)(\{[^}]*\})?\s+([0-9.eE+-]+)$")


def scrape_metrics(base: str, timeout: float = 10.0) -> dict[str, float]:
    """The server's ``/metrics`` (Prometheus text, loopback only) at ``base`` (:func:`http_base`): each
    series, ``name`` or ``name{labels}`` as written, to its value; {} when it cannot be read."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in map(METRIC_LINE.match, text.splitlines()) if m}


def http_base(ws_url: str) -> str:
    m = re.match(r"^ws(s?)://([^/]+)", ws_url)
    if not m:
        raise BenchError(f"--url must look like ws://HOST:PORT/v1/voice, got {ws_url!r}", 2)
    return f"http{m.group(1)}://{m.group(2)}"


async def ready_info(url: str) -> dict:
    """The server's /readyz (it must say ready): what it serves (ASR model, device), for the report."""
    try:
        info = await asyncio.to_thread(get_json, http_base(url) + "/readyz")
    except OSError as e:
        raise BenchError(f"GET {http_base(url)}/readyz failed: {e}", 2) from None
    if not info.get("ready"):
        raise BenchError(f"the server is not ready: {info}", 2)
    return info


def server_flags(args) -> list[str]:
    """``serve`` flags from a bench's ``--model``, ``--compute-type`` and ``--device`` (those given)."""
    extra = []
    for flag, value in (("--model", args.model), ("--compute-type", args.compute_type), ("--device", args.device)):
        if value:
            extra += [flag, value]
    return extra


def run_with_server(args, bench_fn, env: dict | None = None):
    """``bench_fn(args, server)`` against ``args.url``, or against a ``dauys serve`` started here
    (``--model``, ``--compute-type``, ``--device``; ``env`` added to its environment) and always
    stopped, on SIGTERM too; ``args.server_log`` gets its output.  Returns the report, or an exit
    status (BenchError's code, 130 when interrupted).  Shared by the benches that call a server."""
    server = None if args.url else ServerProcess(server_flags(args), env)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server is always stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return asyncio.run(bench_fn(args, server))
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        if server is not None and e.code == 1:
            print("bench: last server output:\n" + server.tail(), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
            say(f"server stopped (exit status {server.proc.returncode})")
            if args.server_log:
                args.server_log.write_text("\n".join(server.lines) + "\n", encoding="utf-8")
                say(f"server log written to {args.server_log}")


async def run_callers(callers) -> list:
    """Run the callers (coroutines, each returning a list) at once: their results, in one list.  When one
    fails, the others are cancelled (and awaited) before the error goes on."""
    tasks = [asyncio.ensure_future(c) for c in callers]
    try:
        return [r for results in await asyncio.gather(*tasks) for r in results]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
