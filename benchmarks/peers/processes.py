"""Processes in their own process group: start, measure memory, stop.

Linux only: memory and group membership are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# Seconds a process group gets to exit after SIGTERM before SIGKILL. The
# figures are read by then, so a slow graceful shutdown only costs run time.
STOP_TIMEOUT = 3.0


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in brackets may contain spaces; fields follow the ")".
    return text[text.rindex(")") + 2 :].split()


def group_members(group_id: int) -> list[int]:
    """Return the live processes, zombies excluded, whose process group is group_id."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is the state, fields[2] the process group id.
        if fields is not None and fields[0] != "Z" and int(fields[2]) == group_id:
            members.append(int(entry))
    return members


def peak_rss_kib(pid: int) -> int:
    """Return VmHWM, the peak resident set size in KiB, of a process (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcessGroup:
    """A command started as the leader of a new process group.

    Signals go to the whole group, so processes that the command forks are
    stopped with it.
    """

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the command with its output appended to the log file."""
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float) -> int | None:
        """Wait for the leader to exit; return its exit code, or None on timeout."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def exit_code(self) -> int | None:
        """Return the leader's exit code, or None while it runs."""
        assert self.process is not None
        return self.process.poll()

    def log_tail(self, lines: int = 5) -> str:
        """Return the last lines of the log, joined with " | "."""
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def peak_rss_mib(self) -> float:
        """Return the sum of VmHWM over the processes in the group now, in MiB.

        A process that already exited is not counted. Forked children share
        pages with their parent, so the sum can exceed the memory in use.
        """
        assert self.process is not None
        members = group_members(self.process.pid)
        return sum(peak_rss_kib(pid) for pid in members) / 1024

    def stop(self) -> None:
        """Send SIGTERM to the group, then SIGKILL to whatever is left after 3 s."""
        if self.process is None:
            return
        group_id = self.process.pid
        self._signal(group_id, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while group_members(group_id) and time.monotonic() < deadline:
            self.process.poll()
            time.sleep(0.05)
        if group_members(group_id):
            self._signal(group_id, signal.SIGKILL)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    @staticmethod
    def _signal(group_id: int, signum: signal.Signals) -> None:
        try:
            os.killpg(group_id, signum)
        except ProcessLookupError:
            pass
