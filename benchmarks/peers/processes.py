"""Processes in their own process group: start, measure memory, stop.

Linux only: memory and group membership are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

# Seconds a process group gets to exit after SIGTERM before SIGKILL. The
# figures are read by then, so a slow graceful shutdown only costs run time.
STOP_TIMEOUT = 3.0

# Seconds between two samples of a process group's proportional set size,
# and between two scans of /proc for the group's members. A scan reads the
# stat file of every process on the machine, which costs much more than one
# PSS read, so members are looked up less often.
PSS_INTERVAL = 0.1
MEMBERS_INTERVAL = 0.5


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


def pss_kib(pid: int) -> int:
    """Return the proportional set size in KiB of a process (0 if gone).

    PSS counts each page that n processes map as 1/n of a page, so the PSS
    of the processes that share a page adds up to that page once. The kernel
    sums it over all mappings in /proc/PID/smaps_rollup (Linux 4.14 and
    later).
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


class PssSampler:
    """Samples the sum of PSS over a process group from a thread.

    Every PSS_INTERVAL seconds between start() and stop(), the thread sums
    the PSS of the group's members, which it looks up again every
    MEMBERS_INTERVAL seconds and for the last sample. peak_mib is the largest
    of those sums. A process that lives less than MEMBERS_INTERVAL may be
    missed.
    """

    def __init__(self, group_id: int) -> None:
        self.group_id = group_id
        self.peak_kib = 0
        self._members: list[int] = []
        self._members_read = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"pss-sampler-{group_id}", daemon=True
        )

    @property
    def peak_mib(self) -> float | None:
        """The largest summed PSS in MiB, or None if no sample found a process."""
        return self.peak_kib / 1024 if self.peak_kib else None

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> float | None:
        """Take a last sample, stop the thread and return peak_mib."""
        self._stop.set()
        self._thread.join()
        return self.peak_mib

    def sample(self, *, read_members: bool = False) -> None:
        """Add one sample of the group's summed PSS."""
        now = time.monotonic()
        if read_members or now - self._members_read >= MEMBERS_INTERVAL:
            self._members = group_members(self.group_id)
            self._members_read = now
        total = sum(pss_kib(pid) for pid in self._members)
        self.peak_kib = max(self.peak_kib, total)

    def _run(self) -> None:
        while not self._stop.wait(PSS_INTERVAL):
            self.sample()
        self.sample(read_members=True)


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

    def sample_pss(self) -> PssSampler:
        """Start a PssSampler on the group and return it for the caller to stop."""
        assert self.process is not None
        sampler = PssSampler(self.process.pid)
        sampler.start()
        return sampler

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
