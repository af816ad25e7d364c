"""Printing a bench's report: table cells, the report as JSON or as the bench's table, the server's complaints."""

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


def print_server_trouble(levels: list[dict], unit: str) -> None:
    """The server log's warnings and errors of each level (``level["server_log"]["trouble"]``), if any."""
    trouble = [(lv["streams"], ln) for lv in levels for ln in lv.get("server_log", {}).get("trouble", [])]
    if trouble:
        print()
        print("server log warnings/errors during the run:")
        for n, ln in trouble:
            print(f"  [{n} {unit}] {ln}")
