"""Suites: named lists of convolution problems (TOML files, grids, benchdnn batch files).

A suite file is TOML::

    [suite]
    name = "resnet50"
    description = "..."
    source = "where the shapes come from (paper, model code URL)"

    [defaults]                 # any ConvSpec field, applied to every problem and grid point
    n = 1
    dtype = "float32"

    [[problem]]                # one problem: a name plus ConvSpec fields ...
    name = "conv1"
    c_in = 3
    c_out = 64
    input_size = [224, 224]
    kernel_size = 7
    stride = 2
    padding = 3
    count = 1                  # optional: how often the layer occurs in the network
    note = "..."               # optional free text

    [[problem]]                # ... or a oneDNN benchdnn descriptor
    name = "res2a"
    benchdnn = "mb1ic64ih56oc64kh3ph1"

    [[grid]]                   # a cartesian product over any ConvSpec fields
    name = "k2d"               # prefix; "k2d[kernel_size=3,stride=1]" names each point,
                               # or a template such as "k2d-k{kernel_size}-s{stride}"
    axes = { kernel_size = [1, 3, 5], stride = [1, 2] }
    c_in = 16                  # fixed fields of every point
    skip_if = ["stride > kernel_size"]   # drop points where any condition holds
    where = ["output_size >= 4"]         # keep only points where every condition holds

Grid points that make an invalid ConvSpec are dropped and counted (``Suite.dropped``), as are
points removed by filters. Filter conditions are a tiny comparison language (no ``eval``):
``expr OP expr [OP expr ...]`` with ``OP`` one of ``< <= > >= == !=``, ``expr`` built from
integers, ``+ - * / %`` and parentheses, and names of the built spec: ``n, c_in, c_out,
groups, dims, flops, transposed, depthwise`` (scalars) and ``input_size, output_size,
kernel_size, stride, dilation, output_padding, padding`` (one value per spatial dimension;
``padding`` is the leading side). Per-dimension values compare element-wise, and a condition
holds only if it holds in every spatial dimension.

For benchdnn problems, ``[defaults]`` contributes only ``dtype`` and ``layout`` (the
descriptor carries the shape); other fields given in the ``[[problem]]`` table override the
descriptor. Command-line overrides (``n``, ``dtype``, ``layout``) apply to every problem.
"""
from __future__ import annotations

import itertools
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional, Sequence

from .errors import InvalidSpecError, SuiteError, SuiteFormatError
from .spec import ConvSpec

SPEC_FIELDS = tuple(f for f in ConvSpec.__dataclass_fields__ if f != "name")
_PROBLEM_META = ("name", "count", "note", "benchdnn")
_GRID_META = ("name", "axes", "skip_if", "where", "note")
_SUITE_KEYS = ("name", "description", "source")
_TOP_KEYS = ("suite", "defaults", "problem", "grid")


class Problem(NamedTuple):
    """One problem of a suite: its name in the suite and its spec (unpacks as a pair)."""

    name: str
    spec: ConvSpec


@dataclass
class Suite:
    """A named list of problems, with where the shapes come from."""

    name: str
    source: str = ""
    description: str = ""
    problems: list[Problem] = field(default_factory=list)
    #: problem name -> how often that layer occurs in the network (1 when not stated)
    counts: dict[str, int] = field(default_factory=dict)
    #: problem name -> free-text note from the suite file
    notes: dict[str, str] = field(default_factory=dict)
    #: where the suite was read from (file path), "" when built in code
    path: str = ""
    #: how many grid points were dropped: {"invalid": k, "filtered": m}
    dropped: dict[str, int] = field(default_factory=lambda: {"invalid": 0, "filtered": 0})

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def specs(self) -> list[ConvSpec]:
        return [p.spec for p in self.problems]

    def with_overrides(self, *, n: Optional[int] = None, dtype: Optional[str] = None,
                       layout: Optional[str] = None) -> "Suite":
        """A copy with batch size, dtype and/or layout replaced in every problem."""
        changes = {k: v for k, v in (("n", n), ("dtype", dtype), ("layout", layout)) if v is not None}
        if not changes:
            return self
        problems = []
        for p in self.problems:
            try:
                problems.append(Problem(p.name, p.spec.replace(**changes)))
            except InvalidSpecError as exc:
                raise SuiteError(f"suite {self.name!r}, problem {p.name!r}: override "
                                 f"{changes} makes an invalid spec: {exc}") from exc
        return Suite(self.name, self.source, self.description, problems, dict(self.counts),
                     dict(self.notes), self.path, dict(self.dropped))


# ---- the filter language -------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z_0-9]*)|(<=|>=|==|!=|<|>|[-+*/%()]))")
_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "%": operator.mod}
_SCALAR_NAMES = ("n", "c_in", "c_out", "groups", "dims", "flops", "transposed", "depthwise")
_DIM_NAMES = ("input_size", "output_size", "kernel_size", "stride", "dilation",
              "output_padding", "padding")
FILTER_NAMES = _SCALAR_NAMES + _DIM_NAMES


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected character {text[pos:].strip()[:1]!r} at position {pos}")
        num, name, op = m.groups()
        if num is not None:
            tokens.append(("num", int(num)))
        elif name is not None:
            if name not in FILTER_NAMES:
                raise ValueError(f"unknown name {name!r}; valid names: {', '.join(FILTER_NAMES)}")
            tokens.append(("name", name))
        else:
            tokens.append(("op", op))
        pos = m.end()
    return tokens


class Condition:
    """A parsed filter condition, e.g. ``stride > kernel_size`` (see the module docstring)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"a condition must be a string, got {text!r}")
        self.text = text
        self._tokens = _tokenize(text)
        self._pos = 0
        operands = [self._sum()]
        ops = []
        while self._peek() in _CMP:
            ops.append(self._next()[1])
            operands.append(self._sum())
        if self._pos != len(self._tokens):
            raise ValueError(f"unexpected {self._tokens[self._pos][1]!r}")
        if not ops:
            raise ValueError("a condition needs a comparison (< <= > >= == !=)")
        self._operands, self._ops = operands, ops
        del self._tokens

    # recursive-descent parser building a small tree of tuples
    def _peek(self) -> Any:
        return self._tokens[self._pos][1] if self._pos < len(self._tokens) else None

    def _next(self) -> tuple[str, Any]:
        if self._pos >= len(self._tokens):
            raise ValueError("the condition ends too early")
        tok = self._tokens[self._pos]
        self._pos += 1
        return tok

    def _sum(self) -> Any:
        node = self._product()
        while self._peek() in ("+", "-"):
            node = (self._next()[1], node, self._product())
        return node

    def _product(self) -> Any:
        node = self._atom()
        while self._peek() in ("*", "/", "%"):
            node = (self._next()[1], node, self._atom())
        return node

    def _atom(self) -> Any:
        kind, value = self._next()
        if kind == "num":
            return ("num", value)
        if kind == "name":
            return ("name", value)
        if value == "(":
            node = self._sum()
            if self._next()[1] != ")":
                raise ValueError("missing ')'")
            return node
        if value == "-":
            return ("-", ("num", 0), self._atom())
        raise ValueError(f"unexpected {value!r}")

    @staticmethod
    def _value(spec: ConvSpec, name: str) -> Any:
        if name == "padding":
            return tuple(a for a, _ in spec.padding)
        if name in ("transposed", "depthwise"):
            return int(getattr(spec, name))
        return getattr(spec, name)

    def _eval(self, node: Any, spec: ConvSpec) -> Any:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "name":
            return self._value(spec, node[1])
        return _broadcast(_ARITH[kind], self._eval(node[1], spec), self._eval(node[2], spec))

    def __call__(self, spec: ConvSpec) -> bool:
        values = [self._eval(o, spec) for o in self._operands]
        for op, a, b in zip(self._ops, values, values[1:]):
            result = _broadcast(_CMP[op], a, b)
            if not (all(result) if isinstance(result, tuple) else result):
                return False
        return True

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def _broadcast(fn: Any, a: Any, b: Any) -> Any:
    if isinstance(a, tuple) or isinstance(b, tuple):
        la = a if isinstance(a, tuple) else (a,) * len(b)
        lb = b if isinstance(b, tuple) else (b,) * len(a)
        if len(la) != len(lb):
            raise ValueError(f"per-dimension values of different lengths: {la} and {lb}")
        return tuple(_apply(fn, x, y) for x, y in zip(la, lb))
    return _apply(fn, a, b)


def _apply(fn: Any, a: Any, b: Any) -> Any:
    """``fn(a, b)``; a division by zero is NaN (every comparison with it fails)."""
    try:
        return fn(a, b)
    except ZeroDivisionError:
        return math.nan
    except OverflowError:
        raise ValueError(f"{str(a)[:20]}... and {str(b)[:20]}: the result is too large for a "
                         f"number") from None


# ---- loading -------------------------------------------------------------------------------
def _shipped_dir() -> Any:
    from importlib.resources import files

    return files("convbench_suites")


def list_suites() -> list[str]:
    """Names of the suites shipped with convbench."""
    try:
        root = _shipped_dir()
    except ModuleNotFoundError:
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def _bad(ctx: str, what: str) -> SuiteFormatError:
    """The error for a malformed part ``ctx`` (file and table) of a suite file."""
    cut = ctx.find(" [")
    path, table = (ctx, None) if cut < 0 else (ctx[:cut], ctx[cut + 1:])
    return SuiteFormatError(path, table, what, message=f"{ctx}: {what}")


def _check_known(ctx: str, table: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise _bad(ctx, f"unknown field(s) {', '.join(map(repr, unknown))}; valid: {', '.join(allowed)}")


#: what ConvSpec.from_dict raises for values of the wrong kind (a table, a date, a huge number)
_SPEC_VALUE_ERRORS = (TypeError, ValueError, AttributeError, OverflowError)


def _make_spec(ctx: str, fields: dict, name: str) -> ConvSpec:
    try:
        return ConvSpec.from_dict({**fields, "name": name})
    except _SPEC_VALUE_ERRORS as exc:  # InvalidSpecError is a ValueError
        raise _bad(ctx, f"invalid spec: {exc}") from exc


def _parse_conditions(ctx: str, key: str, value: Any) -> list[Condition]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _bad(ctx, f"{key}: must be a list of condition strings, got {value!r}")
    out = []
    for i, text in enumerate(value):
        try:
            out.append(Condition(text))
        except ValueError as exc:
            raise _bad(ctx, f"{key}[{i}] {text!r}: {exc}") from exc
        except RecursionError:
            raise _bad(ctx, f"{key}[{i}]: the condition is nested too deeply") from None
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(_fmt_value(x) for x in v)
    if isinstance(v, bool):
        return "T" if v else "F"
    return str(v)


def _grid_point_name(template: str, point: dict) -> str:
    if "{" in template:
        def sub(m: re.Match) -> str:
            key = m.group(1)
            if key not in point:
                raise KeyError(key)
            return _fmt_value(point[key])

        return re.sub(r"\{([A-Za-z_]+)\}", sub, template)
    return f"{template}[{','.join(f'{k}={_fmt_value(v)}' for k, v in point.items())}]"


def _count(ctx: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(ctx, f"count: {value!r} must be an integer >= 1")
    return value


def _read_toml(path: Path) -> dict:
    """The parsed TOML of a suite file (SuiteFormatError for anything that is not TOML)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteFormatError(path, None, f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SuiteFormatError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                           f"TOML files are UTF-8") from None
    except RecursionError:
        raise SuiteFormatError(path, None, "not valid TOML: nested too deeply") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _suite_head(path: Path, data: dict, name_hint: str) -> Suite:
    """The empty Suite the [suite] table describes (after checking the top-level keys)."""
    _check_known(str(path), data, _TOP_KEYS)
    head = data.get("suite", {})
    if not isinstance(head, dict):
        raise _bad(str(path), "[suite] must be a table")
    _check_known(f"{path} [suite]", head, _SUITE_KEYS)
    for key in _SUITE_KEYS:
        if key in head and not isinstance(head[key], str):
            raise _bad(f"{path} [suite]", f"{key} must be a string, got {head[key]!r}")
    return Suite(name=head.get("name", name_hint), source=head.get("source", ""),
                 description=head.get("description", ""), path=str(path))


def _suite_body(path: Path, data: dict) -> tuple[dict, list, list]:
    """The [defaults] table and the [[problem]] and [[grid]] arrays, checked for shape."""
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _bad(str(path), "[defaults] must be a table")
    _check_known(f"{path} [defaults]", defaults, SPEC_FIELDS)
    problems = data.get("problem", [])
    grids = data.get("grid", [])
    if not isinstance(problems, list) or not isinstance(grids, list):
        raise _bad(str(path), "use [[problem]] and [[grid]] (arrays of tables)")
    if not problems and not grids:
        raise _bad(str(path), "the suite has no [[problem]] or [[grid]] tables")
    return defaults, problems, grids


def _add(suite: Suite, ctx: str, pname: str, spec: ConvSpec, count: int = 1, note: str = "") -> None:
    if pname in suite.counts:
        raise _bad(ctx, f"duplicate problem name {pname!r}")
    suite.problems.append(Problem(pname, spec))
    suite.counts[pname] = count
    if note:
        suite.notes[pname] = note


def _problem(ctx: str, table: Any, defaults: dict, i: int) -> tuple[str, ConvSpec]:
    """The name and spec of one [[problem]] table (fields, or a benchdnn descriptor)."""
    if not isinstance(table, dict):
        raise _bad(ctx, "must be a table")
    _check_known(ctx, table, _PROBLEM_META + SPEC_FIELDS)
    fields = {k: v for k, v in table.items() if k in SPEC_FIELDS}
    pname = table.get("name")
    if pname is not None and (not isinstance(pname, str) or not pname):
        raise _bad(ctx, f"name: {pname!r} must be a non-empty string")
    if "benchdnn" not in table:
        pname = pname or f"problem{i + 1}"
        return pname, _make_spec(ctx, {**defaults, **fields}, pname)
    desc = table["benchdnn"]
    if not isinstance(desc, str):
        raise _bad(ctx, f"benchdnn: {desc!r} must be a descriptor string")
    overrides = {k: v for k, v in defaults.items() if k in ("dtype", "layout")}
    overrides.update(fields)
    try:
        spec = ConvSpec.from_benchdnn(desc, **overrides)
    except _SPEC_VALUE_ERRORS as exc:
        raise _bad(ctx, f"benchdnn {desc!r}: {exc}") from exc
    pname = pname or spec.name or f"problem{i + 1}"
    return pname, spec.replace(name=pname)


def _add_problems(suite: Suite, path: Path, problems: list, defaults: dict) -> None:
    for i, table in enumerate(problems):
        ctx = f"{path} [[problem]] #{i + 1}"
        pname, spec = _problem(ctx, table, defaults, i)
        note = table.get("note", "")
        if not isinstance(note, str):
            raise _bad(ctx, f"note: {note!r} must be a string")
        _add(suite, ctx, pname, spec, _count(ctx, table.get("count", 1)), note)


def _grid_axes(ctx: str, table: Any) -> dict:
    """The checked ``axes`` table of one [[grid]] table."""
    if not isinstance(table, dict):
        raise _bad(ctx, "must be a table")
    _check_known(ctx, table, _GRID_META + SPEC_FIELDS)
    axes = table.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise _bad(ctx, "axes: needs a table of field = [values...], e.g. axes = { kernel_size = [1, 3, 5] }")
    _check_known(f"{ctx} axes", axes, SPEC_FIELDS)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise _bad(ctx, f"axes.{key}: {values!r} must be a non-empty list")
    clash = sorted(set(axes) & set(table))
    if clash:
        raise _bad(ctx, f"field(s) {', '.join(clash)} given both as an axis and fixed")
    return axes


def _add_grid(suite: Suite, ctx: str, table: Any, defaults: dict, i: int) -> None:
    """Every valid, unfiltered point of one [[grid]] table."""
    axes = _grid_axes(ctx, table)
    prefix = table.get("name", f"grid{i + 1}")
    if not isinstance(prefix, str) or not prefix:
        raise _bad(ctx, f"name: {prefix!r} must be a non-empty string")
    skip = _parse_conditions(ctx, "skip_if", table.get("skip_if", []))
    keep = _parse_conditions(ctx, "where", table.get("where", []))
    fixed = {**defaults, **{k: v for k, v in table.items() if k in SPEC_FIELDS}}
    keys = list(axes)
    made = 0
    for combo in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, combo))
        try:
            pname = _grid_point_name(prefix, point)
        except KeyError as exc:
            raise _bad(ctx, f"name template {prefix!r} refers to {exc.args[0]!r}, which is not an "
                            f"axis ({', '.join(keys)})") from exc
        try:
            spec = ConvSpec.from_dict({**fixed, **point, "name": pname})
        except InvalidSpecError:
            suite.dropped["invalid"] += 1
            continue
        except _SPEC_VALUE_ERRORS as exc:
            raise _bad(ctx, f"invalid spec at {point}: {exc}") from exc
        try:
            drop = any(c(spec) for c in skip) or not all(c(spec) for c in keep)
        except ValueError as exc:
            raise _bad(ctx, f"filter failed at {point}: {exc}") from exc
        if drop:
            suite.dropped["filtered"] += 1
            continue
        _add(suite, ctx, pname, spec, 1, table.get("note", ""))
        made += 1
    if not made:
        raise _bad(ctx, "every grid point was invalid or filtered out")


def _from_toml(path: Path, name_hint: str) -> Suite:
    """The suite a TOML file describes (see the module docstring)."""
    data = _read_toml(path)
    suite = _suite_head(path, data, name_hint)
    defaults, problems, grids = _suite_body(path, data)
    _add_problems(suite, path, problems, defaults)
    for i, table in enumerate(grids):
        _add_grid(suite, f"{path} [[grid]] #{i + 1}", table, defaults, i)
    return suite


def _from_batch(path: Path) -> Suite:
    from .benchdnn import read_batch_file

    try:
        specs = read_batch_file(path)
    except SuiteError:
        raise
    except InvalidSpecError as exc:
        raise SuiteFormatError(path, None, str(exc)) from exc
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not specs:
        raise SuiteFormatError(path, None, "the batch file holds no problems")
    suite = Suite(name=path.stem, source=f"benchdnn batch file {path}", path=str(path))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        base = spec.name or f"{path.stem}-{i + 1}"
        seen[base] = seen.get(base, 0) + 1
        pname = base if seen[base] == 1 else f"{base}#{seen[base]}"  # batch files repeat names
        suite.problems.append(Problem(pname, spec.replace(name=pname)))
        suite.counts[pname] = 1
    return suite


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """The file a suite name or path refers to; SuiteError lists the shipped suites otherwise."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if not any(sep in text for sep in ("/", "\\")) and not text.endswith(".toml"):
        try:
            candidate = _shipped_dir() / f"{text}.toml"
            if candidate.is_file():
                return Path(str(candidate))
        except ModuleNotFoundError:
            pass
    raise SuiteError(f"suite {text!r} is neither a shipped suite nor a file; shipped suites: "
                     f"{', '.join(list_suites()) or 'none'}")


def load_suite(name_or_path: str | Path, *, n: Optional[int] = None, dtype: Optional[str] = None,
               layout: Optional[str] = None) -> Suite:
    """Load a shipped suite by name, a suite TOML file, or a benchdnn batch file (any other file).

    ``n``, ``dtype`` and ``layout`` override those fields in every problem.
    """
    path = resolve_suite_path(name_or_path)
    if path.suffix.lower() == ".toml":
        suite = _from_toml(path, path.stem)
    else:
        suite = _from_batch(path)
    return suite.with_overrides(n=n, dtype=dtype, layout=layout)


def suite_from_specs(specs: Iterable[ConvSpec | str], name: str = "spec", *,
                     source: str = "command line") -> Suite:
    """A suite of the given specs or benchdnn descriptors (named by their name or position)."""
    suite = Suite(name=name, source=source)
    for i, item in enumerate(specs):
        try:
            spec = ConvSpec.from_benchdnn(item) if isinstance(item, str) else item
        except InvalidSpecError as exc:
            raise SuiteError(f"--spec {item!r}: {exc}") from exc
        pname = spec.name or f"{name}{i + 1}"
        if pname in suite.counts:
            raise SuiteError(f"duplicate problem name {pname!r} among the given specs")
        suite.problems.append(Problem(pname, spec.replace(name=pname)))
        suite.counts[pname] = 1
    return suite


def merge_suites(first: Suite, second: Suite) -> Suite:
    """One suite holding both suites' problems (names must stay unique)."""
    merged = Suite(first.name, first.source, first.description, list(first.problems),
                   dict(first.counts), dict(first.notes), first.path, dict(first.dropped))
    for p in second.problems:
        if p.name in merged.counts:
            raise SuiteError(f"duplicate problem name {p.name!r} (in {first.name!r} and {second.name!r})")
        merged.problems.append(p)
        merged.counts[p.name] = second.counts.get(p.name, 1)
    return merged
