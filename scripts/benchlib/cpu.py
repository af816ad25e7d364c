"""CPU time: a process's (from /proc/PID/stat), this process's, the whole machine's (/proc/stat), and a meter over a run."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime (+ reaped children's) of ``pid`` in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # the command name (field 2) may hold spaces: the fields after its closing ')' start at field 3
    rest = stat[stat.rfind(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])  # fields 14..17
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    guest = sum(ticks[8:10])  # already counted in user/nice
    return (sum(ticks) - idle - guest) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class CpuUse:
    """What a :class:`CpuMeter` saw: seconds of wall clock and of CPU."""

    wall: float
    busy: float
    """The whole machine, all cores."""
    server: float | None
    """The server process (None: no pid to read)."""
    client: float
    """This process."""

    @property
    def other(self) -> float | None:
        """CPU the rest of the machine used meanwhile: other load skews every figure on a small machine."""
        return None if self.server is None else max(0.0, self.busy - self.server - self.client)


class CpuMeter:
    """CPU spent from its start to :meth:`stop`: the server's (``server_pid``), this process's, the machine's."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.server0 = proc_cpu_seconds(server_pid) if server_pid else None
        self.client0 = own_cpu_seconds()
        self.busy0 = machine_busy_seconds()
        self.wall0 = time.monotonic()

    def stop(self) -> CpuUse:
        wall = time.monotonic() - self.wall0
        busy = machine_busy_seconds() - self.busy0
        server = proc_cpu_seconds(self.server_pid) - self.server0 if self.server_pid else None
        client = own_cpu_seconds() - self.client0
        return CpuUse(wall, busy, server, client)


def machine() -> dict:
    """The machine a report was measured on: CPUs available, CPU model, Python version."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu or "unknown", "python": sys.version.split()[0]}
