"""Nothing a test started may outlive the run: find such processes at the end, stop them, fail.

A process counts as the run's when its ancestry leads to the pytest process, or when it was
reparented away (a daemon such as gpg-agent double-forks) but its command line, environment
or working directory points below the run's temporary folder. Processes that existed before
the run started never count, so other runs on the same machine are left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
#: gpg's daemons, stopped per home directory by `gpgconf --kill all`.
GPG_SOCKETS = ("S.gpg-agent", "S.keyboxd", "S.scdaemon", "S.dirmngr")


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str
    why: str  # "a descendant of pytest" or what pointed below the run's folder


def pids() -> set[int]:
    return {int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()}


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid), or None if the process is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[1])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _points_below(pid: int, base: bytes) -> str | None:
    """What of this process names a path below `base` (its command line, environment, cwd)."""
    needle = base.rstrip(b"/") + b"/"
    proc = _PROC / str(pid)
    if needle in _read(proc / "cmdline") + b"/":
        return "its command line"
    if any(needle in (value + b"/") for value in _read(proc / "environ").split(b"\0")):
        return "its environment"
    try:
        cwd = os.readlink(proc / "cwd").encode()
    except OSError:
        return None
    return "its working directory" if (cwd + b"/").startswith(needle) else None


def command_line(pid: int) -> str:
    raw = _read(_PROC / str(pid) / "cmdline").replace(b"\0", b" ").strip()
    return raw.decode(errors="replace")[:300] or f"[{pid}]"


def find(root: int, before: Iterable[int], base: Path) -> list[Leftover]:
    """Live processes (not zombies) started after `before` that belong to the run of `root`."""
    existing = set(before) | {root, os.getpid()}
    states = {pid: st for pid in pids() if (st := _stat(pid)) is not None}
    found = []
    for pid, (state, _) in sorted(states.items()):
        if pid in existing or state == "Z":
            continue
        ancestor, seen = pid, set()
        while ancestor in states and ancestor not in seen and ancestor != root:
            seen.add(ancestor)
            ancestor = states[ancestor][1]
        if ancestor == root:
            found.append(Leftover(pid, command_line(pid), "a descendant of pytest"))
        elif (why := _points_below(pid, str(base).encode())) is not None:
            found.append(Leftover(pid, command_line(pid), f"{why} is below {base}"))
    return found


def kill(leftovers: Iterable[Leftover], grace: float = 5.0) -> None:
    """SIGTERM each one, then SIGKILL whatever is still there after `grace` seconds."""
    targets = [leftover.pid for leftover in leftovers]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in targets):
        time.sleep(0.05)
    for pid in targets:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    if stat is not None and stat[0] == "Z":
        try:  # our own child: reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return stat is not None


def stop_gpg_daemons(base: Path) -> None:
    """`gpgconf --kill all` for every GnuPG home below `base` that has a daemon's socket
    (gpg starts an agent per home directory and leaves it, and its helpers, running)."""
    homes = {socket.parent for name in GPG_SOCKETS for socket in base.rglob(name)}
    for home in sorted(homes):
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip
