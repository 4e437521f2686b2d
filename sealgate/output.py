"""How commands talk to people and to machines: one-line results, JSON, progress on a terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from signer.digest import ProgressCallback

#: Below this many bytes a progress bar would only flicker.
PROGRESS_THRESHOLD = 64 << 20


def os_error_line(exc: OSError) -> str:
    """PATH: STRERROR, for an OS error on a path that no command turned into a typed error."""
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc)
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def one_line(text: str) -> str:
    """`text` with every character that is not printable escaped (`\\n`, `\\x1b`, `\\udcff`),
    so a file name cannot start a forged line ("verified ...", "::workflow-command::")."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def emit_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()  # a reader that went away shows here, inside the command, not at exit


@contextmanager
def byte_progress(label: str, total_bytes: int) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on stderr when it is a terminal and the work is large; else nothing."""
    if total_bytes < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total_bytes)
        yield lambda n: progress.advance(task, n)
