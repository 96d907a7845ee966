"""The sweep's progress display, fitted to the terminal's width without cutting a name."""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from ..fmt import fmt_time

#: width of rich's elapsed and remaining-time columns ("0:00:05")
_TIME_W = 7


def fit_fields(fields: Sequence[tuple[int, str]], width: int) -> str:
    """The ``(rank, text)`` fields joined by spaces, in their order, within ``width``: the
    fields of highest rank (least important) are left out whole until the line fits. A
    field is never cut; the rank-0 fields are always kept, even if they alone are too wide."""
    keep = [(r, t) for r, t in fields if t]
    while len(" ".join(t for _, t in keep)) > width:
        worst = max(r for r, _ in keep)
        if worst == 0:
            break
        keep = [(r, t) for r, t in keep if r != worst]
    return " ".join(t for _, t in keep)


def fmt_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


def _columns(stream: Any) -> int:
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((80, 24)).columns


class Progress:
    """Progress display: rich's bar on a terminal when rich is installed, a plain ``\\r`` line
    on a terminal otherwise (both within the terminal's width), and one line per finished
    candidate when not a terminal (a log: lines are whole, however long)."""

    def __init__(self, enabled: bool, n_problems: int, stream: Any = None, *,
                 use_rich: bool = True) -> None:
        self.enabled = enabled
        self.total = 0
        self.n_problems = n_problems
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.monotonic()
        self._measuring = False
        self._rich: Any = None
        self._task: Any = None
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = _columns(self.stream) if self.tty else 0
        if enabled and self.tty and use_rich:
            self._start_rich()

    def _start_rich(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:
            return
        self._bar_w = max(10, min(40, self.width - 100))
        self._rich = Progress(TextColumn("{task.description}"), BarColumn(bar_width=self._bar_w),
                              MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                              TimeRemainingColumn(), console=Console(file=self.stream, width=self.width),
                              transient=True)
        self._rich.start()
        self._task = self._rich.add_task("starting", total=None)

    def set_total(self, total: int) -> None:
        self.total = max(total, 0)
        if self._rich is not None:
            self._rich.update(self._task, total=self.total or None)

    def eta(self) -> Optional[float]:
        if self.done == 0:
            return None
        return (time.monotonic() - self.t0) / self.done * (self.total - self.done)

    def _fields(self, index: int, problem: str, candidate: str) -> list[tuple[int, str]]:
        """What the line says, most important (lowest rank) first to stay."""
        return [(2, f"problem {index}/{self.n_problems}"), (1, problem), (0, candidate)]

    def start(self, index: int, problem: str, candidate: str) -> None:
        """``candidate`` of the ``index``-th problem starts being measured."""
        if not self._measuring:  # the ETA counts from the first measured candidate
            self._measuring = True
            self.t0 = time.monotonic()
        if not self.enabled:
            return
        fields = self._fields(index, problem, candidate)
        if self._rich is not None:
            # the bar, "done/total", elapsed, "ETA", remaining, and a space between columns
            others = self._bar_w + 2 * len(str(self.total)) + 1 + 2 * _TIME_W + len("ETA") + 5
            self._rich.update(self._task, description=fit_fields(fields, self.width - others - 1))
        elif self.tty:
            eta = self.eta()
            fields = [(0, f"{self.done}/{self.total}")] + fields
            if eta is not None:
                fields.append((3, f" ETA {fmt_eta(eta)}"))
            self.stream.write("\r\x1b[K" + fit_fields(fields, self.width - 1))
            self.stream.flush()

    def finish_one(self, record: Mapping[str, Any], measured: bool, index: int = 0) -> None:
        """``record`` was written; ``measured``: it counts towards the total."""
        if measured:
            self.done += 1
            if self._rich is not None:
                self._rich.update(self._task, advance=1)
        if not self.enabled or self._rich is not None or self.tty:
            return
        status = record["status"]
        if not measured and status == "unsupported":
            return  # recorded with its reason; a line each would bury the measurements
        detail = fmt_time(record.get("median_s")) if status == "ok" else (record.get("message") or "")
        eta = self.eta()
        line = (f"[{self.done}/{self.total}] problem {index}/{self.n_problems} {record['problem']} "
                f"{record['candidate']}: {status}"
                + (f" {detail[:120]}" if detail else "")
                + (f" (ETA {fmt_eta(eta)})" if measured and eta is not None else ""))
        print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message above the progress line."""
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.console.print(text, highlight=False)
        else:
            if self.tty:
                self.stream.write("\r\x1b[K")
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


__all__ = ["Progress", "fit_fields", "fmt_eta"]
