"""Printing a bench's report: table cells, a table, the report as JSON or as the bench's table, the server's complaints."""

from __future__ import annotations

import json
from typing import Callable


def fmt(x, unit: str = "") -> str:
    return "-" if x is None else f"{x:g}{unit}"


def emit(report: dict, as_json: bool, print_table: Callable[[dict], None]) -> None:
    """The report on stdout: one JSON object (``--json``) or ``print_table(report)``."""
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_table(report)


def print_table(head: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """A blank line, then a table: ``head`` (the corner cell, then one name per column) and ``rows``
    of (label, one cell per column), labels left-aligned and cells right-aligned."""
    w0 = max(len(r[0]) for r in rows + [(head[0], [])])
    widths = [max(len(head[i + 1]), *(len(r[1][i]) for r in rows)) for i in range(len(head) - 1)]
    print()
    print(head[0].ljust(w0) + "".join("  " + h.rjust(w) for h, w in zip(head[1:], widths)))
    print("-" * (w0 + sum(w + 2 for w in widths)))
    for name, vals in rows:
        print(name.ljust(w0) + "".join("  " + v.rjust(w) for v, w in zip(vals, widths)))


def print_server_trouble(levels: list[dict], unit: str) -> None:
    """The server log's warnings and errors of each level (``level["server_log"]["trouble"]``), if any."""
    trouble = [(lv["streams"], ln) for lv in levels for ln in lv.get("server_log", {}).get("trouble", [])]
    if trouble:
        print()
        print("server log warnings/errors during the run:")
        for n, ln in trouble:
            print(f"  [{n} {unit}] {ln}")
