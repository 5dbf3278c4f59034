"""One progress bar for a long job: done/total, the current item, elapsed time and an ETA.

On a terminal the bar redraws in place; otherwise (a log file, CI) it writes one plain line per
finished item, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.current: list[str] = []
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def eta(self) -> float | None:
        if not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * (self.total - self.done)

    def line(self) -> str:
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        eta = self.eta()
        current = ", ".join(self.current) if self.current else "-"
        return (
            f"[{bar}] {self.done}/{self.total} | now: {current} | "
            f"elapsed {duration(time.monotonic() - self.started)} | "
            f"ETA {duration(eta) if eta is not None else '?'}"
        )

    def start(self, item: str) -> None:
        self.current.append(item)
        if self.tty:
            self._draw()

    def advance(self, item: str) -> None:
        if item in self.current:
            self.current.remove(item)
        self.done += 1
        if self.tty:
            self._draw()
        else:
            self.stream.write(f"finished {item}; {self.line()}\n")
            self.stream.flush()

    def _draw(self) -> None:
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
