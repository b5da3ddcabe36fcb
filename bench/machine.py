"""Other load on the machine: CPU used by processes that are not the benchmark's, from /proc.

The benchmark pins its processes, but others (a test suite, a build) may run on the same two cores
and would skew every figure. Each measurement is bracketed by two snapshots of the CPU time of all
processes outside the benchmark's own process tree (kernel threads left out); a child reaped by a
surviving parent still counts through the parent's cutime/cstime. A disturbed measurement is
retried after the machine has quietened, and the figure is reported either way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
KTHREADD = 2
QUIET_PERCENT = 10.0  # of one core
WAIT_BUDGET_S = 180.0  # waiting for quiet, over a whole run: a busy machine slows the run, never stalls it
_waited = 0.0


@dataclass(frozen=True)
class Snapshot:
    taken: float
    foreign_ticks: dict[int, int]


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def snapshot(root: int | None = None) -> Snapshot:
    """CPU ticks (own + reaped children) of every process outside `root`'s tree (default: this process)."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        # fields after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime ...
        ticks[pid] = sum(int(value) for value in fields[11:15])
    foreign = {pid: value for pid, value in ticks.items() if not _in_tree(pid, parents, {root, KTHREADD})}
    return Snapshot(time.monotonic(), foreign)


def _in_tree(pid: int, parents: dict[int, int], roots: set[int]) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        if pid in roots or parents.get(pid) in roots:
            return True
        pid = parents.get(pid, 0)
        seen += 1
    return pid == KTHREADD


def foreign_percent(before: Snapshot, after: Snapshot) -> float:
    """Other processes' CPU between two snapshots, in percent of one core."""
    used = sum(value - before.foreign_ticks.get(pid, 0) for pid, value in after.foreign_ticks.items())
    # A process that ended in between reappears whole in its parent's cutime/cstime: take off what it
    # had used before the window.
    used -= sum(value for pid, value in before.foreign_ticks.items() if pid not in after.foreign_ticks)
    elapsed = max(after.taken - before.taken, 1e-3)
    return 100.0 * max(used, 0) / TICKS / elapsed


def wait_quiet(limit_s: float = 60.0, window_s: float = 1.0, threshold: float = QUIET_PERCENT) -> float:
    """Wait until other processes use less than `threshold`% of a core, for at most `limit_s` and within
    the run's overall budget; return the last reading."""
    global _waited
    started = time.monotonic()
    deadline = started + max(0.0, min(limit_s, WAIT_BUDGET_S - _waited))
    try:
        while True:
            before = snapshot()
            time.sleep(window_s)
            load = foreign_percent(before, snapshot())
            if load < threshold or time.monotonic() >= deadline:
                return load
    finally:
        _waited += time.monotonic() - started


def budget_left() -> bool:
    return _waited < WAIT_BUDGET_S
