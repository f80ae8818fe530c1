"""Processes the benchmark starts: free ports, CPU pinning, /proc readings, stopping by pid."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TASKSET = shutil.which("taskset")
CPUS = sorted(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """``argv`` run on one CPU (children inherit it), when taskset and that CPU exist."""
    if cpu is None or TASKSET is None or len(CPUS) < 2:
        return argv
    return [TASKSET, "-c", str(CPUS[cpu % len(CPUS)]), *argv]


def pinning_note() -> str:
    if TASKSET is None:
        return "not pinned (no taskset)"
    if len(CPUS) < 2:
        return "not pinned (one CPU)"
    return f"server on CPU {CPUS[0]}, load generator on CPU {CPUS[1]} (taskset)"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (gunicorn's workers, say)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` (from /proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    """Resident memory of ``pids`` in KiB (from /proc/PID/statm)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except OSError:
            pass
    return total


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by children) toward ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields is not None else None


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop ``proc`` and whatever it started, by pid: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    # Remember each process's start time so that a recycled pid is never signalled.
    family = [(pid, _start_time(pid)) for pid in tree(proc.pid)]
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    for pid, started in family:
        if pid == proc.pid and proc.poll() is not None:
            continue
        if started is None or _start_time(pid) != started:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
