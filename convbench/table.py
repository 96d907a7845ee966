"""The one table renderer of the command line.

A table is laid out once, as plain aligned text that fits the terminal's width (``$COLUMNS``,
else the terminal's size, else 80 columns when piped). On a terminal with rich installed the
same lines are printed with rich styles (bold title and header, dim rule); piped output is
the plain text. Words, such as candidate names, are never cut.
"""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
from typing import Any, Mapping, Optional, Sequence, TextIO

#: spaces between two columns
GAP = 2


def terminal_width(stream: Optional[TextIO] = None) -> int:
    """Columns available on ``stream``: ``$COLUMNS``, the terminal's width, or 80."""
    stream = stream or sys.stdout
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if stream.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return 80


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def wrap_text(text: str, width: int, indent: str = "  ", first: str = "") -> list[str]:
    """``text`` wrapped at spaces to ``width``: the first line starts with ``first``, the
    others with ``indent``."""
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [first.rstrip()]


def fit_columns(headers: Sequence[str], cells: Sequence[Sequence[str]], width: int,
                drop: Sequence[str] = ()) -> tuple[list[int], list[int]]:
    """The columns to show (indices) and their widths, so that the table fits ``width``.

    Each column starts as wide as its widest cell. While the table is too wide, the
    columns named in ``drop`` are left out, in that order; after that the widest column
    that still can wrap loses one character at a time, never below its longest word. A
    table whose words cannot fit is not wrapped at all: it stays wider than ``width``.
    """
    def column(i: int) -> list[str]:
        return [headers[i]] + [r[i] for r in cells]

    natural = [max(len(c) for c in column(i)) for i in range(len(headers))]
    floor = [max(_longest_word(c) for c in column(i)) for i in range(len(headers))]

    def total(widths: dict[int, int]) -> int:
        return sum(widths.values()) + GAP * (len(widths) - 1)

    widths = dict(enumerate(natural))
    for name in drop:
        if total(widths) <= width:
            break
        widths = {i: w for i, w in widths.items() if headers[i] != name} or widths
    if total({i: floor[i] for i in widths}) > width:
        return sorted(widths), [widths[i] for i in sorted(widths)]
    while total(widths) > width:
        widest = max((i for i in widths if widths[i] > floor[i]), key=lambda i: widths[i])
        widths[widest] -= 1
    shown = sorted(widths)
    return shown, [widths[i] for i in shown]


def _layout(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: Optional[str],
            right: Sequence[str], width: int, drop: Sequence[str], group: Optional[str],
            legend: Optional[Mapping[str, str]], notes: Sequence[str]) -> list[tuple[str, str]]:
    """The table's lines, each with its role: title, header, rule, group, row or note."""
    headers = [str(h) for h in headers]
    cells = [[_cell(v) for v in r] for r in rows]
    gcol = headers.index(group) if group in headers else None
    cols = [i for i in range(len(headers)) if i != gcol]
    heads = [headers[i] for i in cols]
    body = [[r[i] for i in cols] for r in cells]
    shown, widths = fit_columns(heads, body, width, drop)

    def block(values: Sequence[str], role: str) -> list[tuple[str, str]]:
        parts = [_wrap(values[i], w) for i, w in zip(shown, widths)]
        lines = []
        for k in range(max(len(p) for p in parts)):
            seg = [(p[k] if k < len(p) else "") for p in parts]
            seg = [s.rjust(w) if heads[i] in right else s.ljust(w)
                   for s, i, w in zip(seg, shown, widths)]
            lines.append((role, (" " * GAP).join(seg).rstrip()))
        return lines

    out = [("title", line) for line in wrap_text(title, width)] if title else []
    out += block(heads, "header")
    out.append(("rule", (" " * GAP).join("-" * w for w in widths)))
    last_group = None
    for full, values in zip(cells, body):
        if gcol is not None and full[gcol] != last_group:
            last_group = full[gcol]
            out += [("group", line) for line in wrap_text(f"{group}: {last_group}", width)]
        out += block(values, "row")
    notes = _notes(heads, shown, legend or {}, notes)
    if notes:  # a blank line keeps the explanations apart from the rows
        out.append(("note", ""))
    return out + [("note", line) for note in notes for line in wrap_text(note, width)]


def _notes(heads: Sequence[str], shown: Sequence[int], legend: Mapping[str, str],
           notes: Sequence[str]) -> list[str]:
    """The legend of the shown columns, the notes, and which columns were left out."""
    visible = {heads[i] for i in shown}
    out = [f"{name}: {text}" for name, text in legend.items() if name in visible]
    out += list(notes)
    hidden = [h for i, h in enumerate(heads) if i not in shown]
    if hidden:
        out.append(f"Not shown for lack of width: {', '.join(hidden)} (a wider terminal, or "
                   "COLUMNS=200, shows them).")
    return out


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 title: Optional[str] = None, right: Sequence[str] = (), width: int = 80,
                 drop: Sequence[str] = (), group: Optional[str] = None,
                 legend: Optional[Mapping[str, str]] = None, notes: Sequence[str] = ()) -> str:
    """The table as plain text within ``width`` columns.

    ``right``: headers of right-aligned columns. ``drop``: optional columns, left out in
    that order while the table is too wide (see :func:`fit_columns`); cells then wrap at
    spaces. ``group``: the header of a column shown as a heading line ("header: value")
    above each run of rows that share its value, instead of as a column. ``title`` comes first; below the
    table come ``legend`` (header -> what the column means, for the columns shown), then
    ``notes``, then the names of columns left out; all wrapped to ``width``.
    """
    return "\n".join(line for _, line in _layout(
        headers, rows, title=title, right=right, width=width, drop=drop, group=group,
        legend=legend, notes=notes))


_STYLES = {"title": "bold", "header": "bold", "rule": "dim", "group": "bold cyan", "note": "dim"}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                title: Optional[str] = None, right: Sequence[str] = (), drop: Sequence[str] = (),
                group: Optional[str] = None, legend: Optional[Mapping[str, str]] = None,
                notes: Sequence[str] = (), plain: bool = False,
                stream: Optional[TextIO] = None) -> None:
    """Print :func:`format_table` at the terminal's width: with rich styles on a terminal
    (unless ``plain`` or rich is not installed), plain text otherwise."""
    stream = stream or sys.stdout
    lines = _layout(headers, rows, title=title, right=right, width=terminal_width(stream),
                    drop=drop, group=group, legend=legend, notes=notes)
    console = None if plain or not stream.isatty() else _rich_console(stream)
    if console is None:
        print("\n".join(line for _, line in lines), file=stream)
        return
    from rich.text import Text

    for role, line in lines:
        console.print(Text(line, style=_STYLES.get(role, "")), soft_wrap=True)


def print_text(text: str = "", *, first: str = "", indent: str = "  ",
               stream: Optional[TextIO] = None) -> None:
    """Print a paragraph wrapped at spaces to the terminal's width (see :func:`wrap_text`)."""
    stream = stream or sys.stdout
    print("\n".join(wrap_text(text, terminal_width(stream), indent, first)), file=stream)


def _rich_console(stream: TextIO) -> Any:
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False)
