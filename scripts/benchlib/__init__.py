"""The benches' library: one copy of what every ``scripts/bench_*.py`` (and ``eval_kb.py``) shares.

- :mod:`.common`: ``ROOT`` (importing it puts the project root on ``sys.path``),
  ``DEFAULT_AUDIO`` (the shared clips), :class:`BenchError`, :func:`say`;
- :mod:`.stats`: :func:`median`, nearest-rank :func:`p95`, :func:`ms`;
- :mod:`.report`: :func:`fmt` (table cells), :func:`print_table`, :func:`emit` (JSON or the table), :func:`print_server_trouble`;
- :mod:`.cpu`: a process's, this process's and the machine's CPU seconds, :class:`CpuMeter`, :func:`machine`;
- :mod:`.server`: :class:`ServerProcess` (a ``dauys serve`` subprocess), :func:`run_with_server`,
  :func:`run_callers`, :func:`get_json`, :func:`http_base`, :func:`ready_info`, :func:`scrape_metrics`, the server log's patterns and :func:`server_log_summary`;
- :mod:`.espeak`: :func:`espeak`, speech from espeak-ng (``tests/conftest.py`` and ``synth_corpus.py`` use it too).

A bench run as ``python scripts/bench_x.py`` finds it beside itself (``scripts/`` is ``sys.path[0]``);
one loaded from elsewhere puts its own folder on ``sys.path`` first.
"""

from __future__ import annotations

from .common import DEFAULT_AUDIO, ROOT, BenchError, say
from .cpu import CpuMeter, CpuUse, machine, machine_busy_seconds, own_cpu_seconds, proc_cpu_seconds
from .espeak import RATE, EspeakMissing, espeak
from .report import emit, fmt, print_server_trouble, print_table
from .server import (
    SERVER_FINAL,
    SERVER_TROUBLE,
    ServerProcess,
    get_json,
    http_base,
    ready_info,
    run_callers,
    run_with_server,
    scrape_metrics,
    server_flags,
    server_log_summary,
)
from .stats import median, ms, p95

__all__ = [
    "DEFAULT_AUDIO",
    "RATE",
    "ROOT",
    "SERVER_FINAL",
    "SERVER_TROUBLE",
    "BenchError",
    "CpuMeter",
    "CpuUse",
    "EspeakMissing",
    "ServerProcess",
    "emit",
    "espeak",
    "fmt",
    "get_json",
    "http_base",
    "ready_info",
    "machine",
    "machine_busy_seconds",
    "median",
    "ms",
    "own_cpu_seconds",
    "p95",
    "print_server_trouble",
    "print_table",
    "proc_cpu_seconds",
    "run_callers",
    "run_with_server",
    "say",
    "scrape_metrics",
    "server_flags",
    "server_log_summary",
]
