"""Which TCP connections reach a loopback port, from ``ss`` (for servers that do not count their accepts).

A connection is known by its client's ephemeral port. ``ss -E`` (the kernel's socket-destroy events) reports
every connection that closes while it runs, reset or not; samples of the established ones add those still open.
Connections not open at the start were opened during the run (the minimal webhook's own accept count checks the
method in every run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _filter(port: int) -> str:
    return f"( sport = :{port} or dport = :{port} )"


def _client_ports(text: str, port: int) -> set[int]:
    """The ports other than ``port`` in ss's lines (the local and the peer address are the last two with a port)."""
    found: set[int] = set()
    for line in text.splitlines():
        ends = [f.rsplit(":", 1)[1] for f in line.split() if ":" in f and f.rsplit(":", 1)[1].isdigit()]
        found.update(int(p) for p in ends[-2:] if int(p) != port)
    return found


def _connections(port: int, state: str) -> set[int]:
    out = subprocess.run(["ss", "-tanH", "state", state, _filter(port)], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return _client_ports(out, port)


@dataclass
class ConnectionTracker:
    """The connections to ``port`` opened between ``start()`` and ``finish()``."""

    port: int
    baseline: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    established_now: int = 0
    _monitor: subprocess.Popen[bytes] | None = None
    _events: Path | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("ss") is not None and shutil.which("stdbuf") is not None

    def start(self) -> None:
        """The baseline is every connection in any state (one closing now is not opened during the run)."""
        self.baseline = _connections(self.port, "all")
        self.seen = set(self.baseline)
        fd, name = tempfile.mkstemp(prefix="leoflow-ss-", suffix=".txt")
        self._events = Path(name)
        self._monitor = subprocess.Popen(["stdbuf", "-oL", "ss", "-tanHE", _filter(self.port)], stdout=fd,
                                         stderr=subprocess.DEVNULL)
        os.close(fd)
        time.sleep(0.2)  # subscribed before the first create

    def sample(self) -> None:
        established = _connections(self.port, "established")
        self.established_now = len(established)
        self.seen |= established

    def finish(self) -> dict[str, int]:
        self.sample()
        closed: set[int] = set()
        if self._monitor is not None and self._events is not None:
            self._monitor.terminate()
            self._monitor.wait(timeout=10)
            closed = _client_ports(self._events.read_text(), self.port)
            self._events.unlink()
        return {"opened": len((self.seen | closed) - self.baseline), "closed": len(closed),
                "open_before": len(self.baseline), "established_at_end": self.established_now}
