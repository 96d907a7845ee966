"""The one table renderer of the command line: rich on a terminal, plain aligned text when
piped, both within the terminal's width (80 columns when it cannot be told)."""
from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Optional, Sequence, TextIO


def _width(stream: TextIO) -> int:
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if stream.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return 80


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = (),
                 width: int = 80, drop: Sequence[str] = ()) -> str:
    """Aligned plain text. Columns named in ``right`` are right-aligned. When the table is wider
    than ``width``, the columns named in ``drop`` are left out (in that order) until it fits;
    then the widest columns are wrapped at spaces. A word (a candidate name) is never cut: a
    table that cannot fit without cutting one stays wider than ``width``."""
    import textwrap

    headers = [str(h) for h in headers]
    cells = [[_cell(v) for v in r] for r in rows]
    keep = list(range(len(headers)))

    def widths(cols: list[int]) -> list[int]:
        return [max([len(headers[i])] + [len(r[i]) for r in cells]) for i in cols]

    for name in drop:
        if sum(widths(keep)) + 2 * (len(keep) - 1) <= width:
            break
        keep = [i for i in keep if headers[i] != name] or keep
    ws = widths(keep)
    excess = sum(ws) + 2 * (len(keep) - 1) - width
    while excess > 0:
        j = max(range(len(ws)), key=lambda k: ws[k])
        floor = max([len(headers[keep[j]])] + [len(w) for r in cells for w in r[keep[j]].split()])
        if ws[j] <= floor:
            others = [k for k in range(len(ws)) if ws[k] > max(
                [len(headers[keep[k]])] + [len(w) for r in cells for w in r[keep[k]].split()])]
            if not others:
                break
            j = max(others, key=lambda k: ws[k])
            floor = max([len(headers[keep[j]])] + [len(w) for r in cells for w in r[keep[j]].split()])
        cut = min(excess, ws[j] - floor)
        ws[j] -= cut
        excess -= cut

    def wrap(text: str, w: int) -> list[str]:
        return textwrap.wrap(text, w, break_on_hyphens=False, break_long_words=False) or [""]

    def line_block(values: list[str]) -> list[str]:
        parts = [wrap(v, w) for v, w in zip(values, ws)]
        height = max(len(p) for p in parts)
        out = []
        for k in range(height):
            seg = []
            for col, (p, w) in enumerate(zip(parts, ws)):
                t = p[k] if k < len(p) else ""
                seg.append(t.rjust(w) if headers[keep[col]] in right else t.ljust(w))
            out.append("  ".join(seg).rstrip())
        return out

    lines = line_block([headers[i] for i in keep])
    lines.append("  ".join("-" * w for w in ws))
    for r in cells:
        lines.extend(line_block([r[i] for i in keep]))
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: Optional[str] = None,
                right: Sequence[str] = (), drop: Sequence[str] = (), stream: Optional[TextIO] = None) -> None:
    """Print a table: with rich on a terminal (when installed), plain text otherwise. Both
    fit the terminal (``$COLUMNS``, else 80 columns when piped), dropping the columns named in
    ``drop`` first and wrapping cells at word boundaries after that."""
    stream = stream or sys.stdout
    width = _width(stream)
    if stream.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            console = Console(file=stream, width=width)
            plain = format_table(headers, rows, right=right, width=width, drop=drop)
            shown = [h for h in headers if h in plain.splitlines()[0].split()] if drop else list(headers)
            table = Table(title=title)
            idx = [headers.index(h) for h in shown] if drop else list(range(len(headers)))
            for i in idx:
                table.add_column(str(headers[i]), justify="right" if headers[i] in right else "left",
                                 overflow="fold")
            for r in rows:
                table.add_row(*(_cell(r[i]) for i in idx))
            console.print(table)
            return
    if title:
        print(title, file=stream)
    print(format_table(headers, rows, right=right, width=width, drop=drop), file=stream)
