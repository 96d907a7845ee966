"""oneDNN benchdnn interop: convolution/deconvolution problem descriptors and batch files.

Descriptor syntax (oneDNN ``tests/benchdnn/conv/conv_aux.cpp``, ``str2desc``; the deconv
driver uses the same keys)::

    gX mbX icX idX ihX iwX ocX odX ohX owX kdX khX kwX sdX shX swX pdX phX pwX ddX dhX dwX nNAME

Keys may come in any order, ``_`` separators are ignored, ``n`` starts the name (the rest of
the descriptor; one pair of surrounding quotes is removed, as a shell would). oneDNN's rules:

* ``mb`` defaults to 2, strides to 1, dilation to 0. oneDNN counts dilation from 0
  (``dh0`` = dense), so convbench's dilation is ``dh + 1``.
* A spatial dimension is present when any of its i/k/o/dilation values is non-zero, its
  stride is not 1 or its padding is >= 1; it then needs both ``i`` and ``k``.
  Only w present: 1D. h present without w: w copies h (2D). d present: 3D, and h and w copy
  d when both are missing (giving only one of them is an error).
* Without an output size, the output is computed from the padding (default 0).
  With an output size and no padding, the left padding is deduced as
  ``((o - 1) * s - i + ek) / 2`` (C division); the right padding is always whatever the
  output size needs: ``pad_r = (o - 1) * s - i + ek - pad_l`` (``ek`` = dilated kernel
  extent). For the deconv driver ``ic``/``ih`` describe the transposed convolution's input and
  ``oc``/``oh`` its output, with ``pad_r = (i - 1) * s - o + ek - pad_l``.

oneDNN allows ``pad_r`` down to ``1 - stride``: the last input rows are then never read. Where
several right paddings give the same result, the parser picks, in order: the symmetric one
(what PyTorch users write), else the smallest non-negative one. For transposed problems the
difference between symmetric padding and the needed ``pad_r`` becomes ``output_padding``
when it is below ``max(stride, dilation)`` (PyTorch's rule), e.g. ``ih28oh56kh3sh2ph1``
parses to padding 1, output_padding 1.

convbench extension: ``rd``/``rh``/``rw`` give the right (after) padding explicitly. They are
not oneDNN syntax; :func:`format_descriptor` writes them only for specs that oneDNN's syntax
cannot tell apart from the parser's choice (padding rows no window reads, output padding split
differently) or cannot express (transposed output padding >= stride, allowed by PyTorch when
dilation > stride), so that ``parse_descriptor(format_descriptor(s)) == s`` always.

Data types in batch files (:func:`cfg_to_dtype`): ``--dt`` (``src:wei:dst``, or one type for
all three) and the older ``--cfg`` names (``f32``, ``bf16bf16f32``, ``u8s8u8``, ...). 8-bit
integer configurations map to convbench's ``int8`` problem (:mod:`convbench.quant`: s8
activations and output, per-tensor scales, per-channel s8 weights): ``--dt=s8``,
``--dt=s8:s8:s8`` and ``--cfg=s8s8s8`` exactly; those with u8 activations or output
(``u8s8u8``, ``u8s8s8``, ``s8s8u8``, ``u8:s8:u8``) with a BenchdnnWarning that u8 is taken as
s8 (convbench models no zero points, and u8 data can take other kernels). Integer
configurations with an f32 or s32 destination (``s8s8f32``, ``u8s8s32``) are not int8
problems here: their descriptors are skipped with a warning, as are fp8 ones.

Deviations from benchdnn, all stricter: a key given twice with different values is an error
(benchdnn keeps the last); a kernel larger than the padded input is an error (benchdnn's C
division can silently round such a descriptor to an output of 1).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import InvalidSpecError, SuiteError, SuiteFormatError
from .spec import ConvSpec

__all__ = ["parse_descriptor", "format_descriptor", "parse_batch_text", "read_batch_file",
           "cfg_to_dtype", "BenchdnnWarning"]

_AXES = ("d", "h", "w")
_SPATIAL = ("i", "o", "k", "s", "p", "d", "r")
KEYS = ("g", "mb", "ic", "oc") + tuple(f"{q}{a}" for q in _SPATIAL for a in _AXES)
_TOKEN = re.compile(r"(mb|ic|oc|[iokspdr][dhw]|g)([+-]?\d+)?")
_DT_NAMES = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16"}


class BenchdnnWarning(UserWarning):
    """A benchdnn batch-file option that convbench ignores or maps approximately."""


def _err(desc: str, message: str) -> InvalidSpecError:
    return InvalidSpecError(f"benchdnn descriptor {desc!r}: {message}")


def _tokenize(desc: str) -> tuple[dict[str, int], str]:
    values: dict[str, int] = {}
    name = ""
    pos = 0
    while pos < len(desc):
        ch = desc[pos]
        if ch == "_":
            pos += 1
            continue
        if ch == "n":
            name = desc[pos + 1:]
            if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
                name = name[1:-1]
            break
        m = _TOKEN.match(desc, pos)
        if not m:
            raise _err(desc, f"unrecognized text {desc[pos:pos + 12]!r} at position {pos}; "
                             f"valid keys: {' '.join(KEYS[:-3])} and n\"name\"")
        key, num = m.group(1), m.group(2)
        if num is None:
            raise _err(desc, f"no value after {key!r} at position {pos}; write e.g. {key}3")
        value = int(num)
        if value < 0:
            raise _err(desc, f"{key}{num}: {key} must be a non-negative integer")
        if key in values and values[key] != value:
            raise _err(desc, f"{key} is given twice with different values "
                             f"({key}{values[key]} and {key}{value})")
        values[key] = value
        pos = m.end()
    return values, name


def _trunc_half(v: int) -> int:
    """C integer division by 2 (rounds toward zero), as benchdnn computes deduced padding."""
    return v // 2 if v >= 0 else -((-v) // 2)


def _resolve(desc: str, a: str, i: int, k: int, s: int, dil: int, p: int | None,
             o: int | None, r: int | None, transposed: bool) -> tuple[int, int, int, int]:
    """(pad_before, pad_after, output_padding, output) for one spatial dim."""
    ek = dil * (k - 1) + 1
    if o is None:
        pl = 0 if p is None else p
        pr = pl if r is None else r
        if transposed:
            o = (i - 1) * s + ek - pl - pr
            if o < 1:
                raise _err(desc, f"o{a}: padding p{a}{pl} (right {pr}) crops the transposed "
                                 f"output of {(i - 1) * s + ek} to {o}; it must keep >= 1")
        else:
            if i + pl + pr < ek:
                raise _err(desc, f"k{a}{k}: the dilated kernel spans {ek} elements but the "
                                 f"padded input i{a}{i} + padding ({pl}, {pr}) is only "
                                 f"{i + pl + pr}")
            o = (i + pl + pr - ek) // s + 1
        return pl, pr, 0, o

    if transposed:
        full = (i - 1) * s + ek
        pl = _trunc_half(full - o) if p is None else p
        if pl < 0:
            raise _err(desc, f"o{a}{o}: larger than the full transposed output {full} of "
                             f"i{a}{i} k{a}{k} s{a}{s}; it would need negative padding")
        pr0 = full - o - pl  # = pad_after - output_padding
        m = max(s, dil)
        if r is not None:
            op = r - pr0
            if not 0 <= op < m:
                raise _err(desc, f"r{a}{r}: with p{a}{pl} the transposed output is "
                                 f"{full - pl - r}, not o{a}{o}")
            return pl, r, op, o
        if pr0 + s <= 0:  # oneDNN's rule: pad_r + stride > 0
            raise _err(desc, f"o{a}{o}: inconsistent with i{a}{i} k{a}{k} s{a}{s} p{a}{pl} "
                             f"d{a}{dil - 1}: the transposed output is at most "
                             f"{full - pl + s - 1} (oneDNN needs pad_r + stride > 0)")
        if 0 <= pl - pr0 < m:
            return pl, pl, pl - pr0, o
        if pr0 >= 0:
            return pl, pr0, 0, o
        return pl, 0, -pr0, o

    pl = _trunc_half((o - 1) * s - i + ek) if p is None else p
    if pl < 0:
        raise _err(desc, f"o{a}{o}: too small for i{a}{i} k{a}{k} s{a}{s}: it would need "
                         f"negative padding")
    pr0 = (o - 1) * s - i + ek - pl
    lo, hi = max(pr0, 0), pr0 + s - 1
    if hi < 0:
        raise _err(desc, f"o{a}{o}: inconsistent with i{a}{i} k{a}{k} s{a}{s} p{a}{pl} "
                         f"d{a}{dil - 1}: they give an output of {(i + 2 * pl - ek) // s + 1}"
                         f" at most, without cropping the input")
    if r is not None:
        if not lo <= r <= hi:
            raise _err(desc, f"r{a}{r}: with p{a}{pl} the output is "
                             f"{(i + pl + r - ek) // s + 1 if i + pl + r >= ek else 0}, "
                             f"not o{a}{o}")
        return pl, r, 0, o
    if lo <= pl <= hi:
        return pl, pl, 0, o
    return pl, lo, 0, o


def parse_descriptor(desc: str, *, transposed: bool = False, **overrides: Any) -> ConvSpec:
    """Parse a benchdnn conv descriptor (``transposed=True``: the deconv driver's meaning).

    ``overrides`` replace ConvSpec fields afterwards (e.g. ``dtype="bfloat16"``,
    ``layout="channels_last"``, ``n=8``); the descriptor itself carries no dtype or layout.
    Raises InvalidSpecError naming the offending text.
    """
    if not isinstance(desc, str):
        raise InvalidSpecError(f"benchdnn descriptor: expected a string, got {type(desc).__name__}")
    text = desc.strip()
    if not text:
        raise InvalidSpecError("benchdnn descriptor: empty string; expected e.g. mb1ic64ih56oc64kh3ph1")
    values, name = _tokenize(text)

    for key in ("ic", "oc"):
        if not values.get(key):
            raise _err(text, f"{key} is {'0' if key in values else 'missing'}; "
                             f"ic and oc (channels) are required and >= 1")
    for key in ("g", "mb", "sd", "sh", "sw"):
        if values.get(key, 1) == 0:
            raise _err(text, f"{key}0: {key} must be >= 1")

    def present(a: str) -> bool:
        nonzero = any(values.get(f"{q}{a}", 0) for q in "ikodr")
        return nonzero or values.get(f"s{a}", 1) != 1 or values.get(f"p{a}", 0) >= 1

    has = {a: present(a) for a in _AXES}
    if has["d"]:
        if has["h"] != has["w"]:
            given, missing = ("h", "w") if has["h"] else ("w", "h")
            raise _err(text, f"3D problem (d given) with {given} but no {missing}: give both "
                             f"h and w values or neither (then they copy d)")
        axes = ("d", "d", "d") if not has["h"] else ("d", "h", "w")
    elif has["h"]:
        axes = ("h", "w") if has["w"] else ("h", "h")
    elif has["w"]:
        axes = ("w",)
    else:
        raise _err(text, "no spatial dimension; give at least iwX and kwX (1D), ihX and khX "
                         "(2D) or idX and kdX (3D)")

    dims: dict[str, tuple[int, int, int, int, int, int, int]] = {}
    for a in dict.fromkeys(axes):
        i, k = values.get(f"i{a}", 0), values.get(f"k{a}", 0)
        for key, v in ((f"i{a}", i), (f"k{a}", k)):
            if v < 1:
                raise _err(text, f"{key} is {'0' if key in values else 'missing'}: the {a} "
                                 f"dimension is used, so i{a} and k{a} must be >= 1")
        s = values.get(f"s{a}", 1)
        dil = values.get(f"d{a}", 0) + 1
        o = values.get(f"o{a}") or None
        pl, pr, op, o = _resolve(text, a, i, k, s, dil, values.get(f"p{a}"), o,
                                 values.get(f"r{a}"), transposed)
        dims[a] = (i, k, s, dil, pl, pr, op)

    per = [dims[a] for a in axes]
    fields: dict[str, Any] = dict(
        n=values.get("mb", 2), c_in=values["ic"], c_out=values["oc"],
        input_size=tuple(d[0] for d in per), kernel_size=tuple(d[1] for d in per),
        stride=tuple(d[2] for d in per), dilation=tuple(d[3] for d in per),
        padding=tuple((d[4], d[5]) for d in per), groups=values.get("g", 1),
        transposed=transposed, output_padding=tuple(d[6] for d in per), name=name)
    unknown = sorted(set(overrides) - set(ConvSpec.__dataclass_fields__))
    if unknown:
        raise InvalidSpecError(f"parse_descriptor: unknown override(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(ConvSpec.__dataclass_fields__)}")
    fields.update(overrides)
    try:
        return ConvSpec(**fields)
    except InvalidSpecError as exc:
        raise _err(text, str(exc)) from None


def format_descriptor(spec: ConvSpec) -> str:
    """The spec as a benchdnn descriptor in oneDNN's canonical form (every key spelled out).

    dtype and layout are not part of a descriptor (benchdnn sets them with ``--cfg``/``--dt``
    and ``--stag``); ``parse_descriptor(format_descriptor(s), transposed=s.transposed,
    dtype=s.dtype, layout=s.layout) == s`` holds for every valid spec.
    """
    axes = _AXES[3 - spec.dims:]
    out = spec.output_size
    right: list[str] = []
    for j, a in enumerate(axes):
        pl, pr = spec.padding[j]
        try:
            chosen = _resolve("", a, spec.input_size[j], spec.kernel_size[j], spec.stride[j],
                              spec.dilation[j], pl, out[j], None, spec.transposed)
        except InvalidSpecError:  # not expressible in oneDNN's own syntax
            chosen = None
        if chosen is None or chosen[:3] != (pl, pr, spec.output_padding[j]):
            right.append(f"r{a}{pr}")

    def group(prefix: str, vals: Any) -> str:
        return "".join(f"{prefix}{a}{v}" for a, v in zip(axes, vals))

    parts = [f"g{spec.groups}mb{spec.n}",
             f"ic{spec.c_in}" + group("i", spec.input_size),
             f"oc{spec.c_out}" + group("o", out),
             group("k", spec.kernel_size), group("s", spec.stride),
             group("p", [p for p, _ in spec.padding])]
    if right:
        parts.append("".join(right))
    parts.append(group("d", [d - 1 for d in spec.dilation]))
    if spec.name:
        parts.append(f'n"{spec.name}"')
    return "_".join(parts)


# ---- batch files -----------------------------------------------------------------------------

_INT_TYPES = ("s8", "u8", "s32")
_CFG_TOKEN = re.compile(r"f64|f32|bf16|f16|s8|u8|s32")


def _split_types(value: str) -> list[str] | None:
    """The data types a ``--dt``/``--cfg`` value names, in order (src, wei, dst), or None.

    ``--dt`` takes ``src:wei:dst`` or one type for all three; ``--cfg`` concatenates them
    (``u8s8u8``, ``bf16bf16f32``) and may carry a suffix (``f32_wino``, ``u8s8s8_wino``)."""
    if ":" in value:
        types = value.split(":")
        known = all(t in _DT_NAMES or t in _INT_TYPES for t in types)
        return types if known and (len(types) == 3 or not set(types) & set(_INT_TYPES)) else None
    m = re.fullmatch(r"((?:f64|f32|bf16|f16|s8|u8|s32)+)(?:_[a-z0-9]+)?", value)
    if not m:
        return None
    types = _CFG_TOKEN.findall(m.group(1))
    if len(types) == 1:
        return types * 3
    return types if len(types) == 3 or not set(types) & set(_INT_TYPES) else None


def _int8_cfg(value: str, types: list[str]) -> tuple[str | None, str | None]:
    """An integer configuration: int8 when it is 8-bit src (s8/u8), s8 weights and an 8-bit
    dst (s8/u8), with a note for each u8 (convbench's int8 problem is symmetric s8)."""
    src, wei, dst = types
    if src not in ("s8", "u8") or wei != "s8" or dst not in ("s8", "u8"):
        return None, None
    taken = [f"{what} taken as s8" for what, t in (("u8 activations", src), ("u8 output", dst))
             if t == "u8"]
    if not taken:
        return "int8", None
    return "int8", (f"{value!r} read as int8 ({', '.join(taken)}: convbench's int8 problem is "
                    f"symmetric s8 with zero point 0; engines may run u8 and s8 data with different "
                    f"kernels, e.g. x86 VNNI multiplies u8 by s8 natively)")


def cfg_to_dtype(value: str) -> tuple[str | None, str | None]:
    """Map a ``--cfg`` or ``--dt`` value onto (convbench dtype or None, note or None).

    Float configurations map to their dtype; mixed float ones (``bf16bf16f32``,
    ``bf16:bf16:f32``) to their narrower type, with a note. Integer ones map to ``"int8"``
    when source and destination are 8-bit and the weights s8: ``s8s8s8``, ``--dt=s8`` and
    ``s8:s8:s8`` exactly; ``u8s8s8``, ``u8s8u8``, ``s8s8u8`` (and their ``:`` spellings) with
    a note that u8 is taken as s8. Integer configurations with an f32/s32 destination
    (``s8s8f32``, ``u8s8s32``), fp8 and unknown ones give None (convbench does not model
    them).
    """
    v = value.strip().lower()
    types = _split_types(v)
    if types is None:
        return None, None
    kinds = set(types)
    if kinds & set(_INT_TYPES):
        return _int8_cfg(value, types)
    if len(kinds) == 1:
        return _DT_NAMES[types[0]], None
    narrow = kinds - {"f32"}
    if len(narrow) == 1 and kinds <= {"f32", "bf16", "f16"}:
        dt = _DT_NAMES[narrow.pop()]
        return dt, f"mixed-precision {value!r} read as {dt} (convbench problems have one dtype)"
    return None, None


@dataclass
class _State:
    cfgs: list[tuple[str, str | None]] = field(default_factory=lambda: [("--cfg=f32", "float32")])
    mbs: list[int] = field(default_factory=lambda: [0])
    transposed: bool = False
    ignored: dict[str, int] = field(default_factory=dict)
    skipped_cfg: dict[str, int] = field(default_factory=dict)
    notes: dict[str, None] = field(default_factory=dict)
    stack: list[Path] = field(default_factory=list)


def _tokens(text: str) -> Iterator[tuple[int, str]]:
    """(line number, token) pairs as benchdnn's batch reader splits them; quotes keep spaces."""
    pending: tuple[int, str] | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r'(?:[^\s"]+|"[^"]*"?)+', line):
            tok = m.group(0)
            if tok.startswith("#") and pending is None:
                break
            if pending is not None:
                tok = pending[1] + tok
                lineno_tok = pending[0]
                pending = None
            else:
                lineno_tok = lineno
            if tok == "\\":
                continue
            if tok.endswith("\\"):
                pending = (lineno_tok, tok[:-1])
                continue
            yield lineno_tok, tok
    if pending is not None:
        yield pending


_FORWARD_DIRS = {"FWD_B", "FWD_D", "FWD_I"}


def _batch(text: str, source: str, base_dir: Path, state: _State, overrides: dict[str, Any],
           out: list[ConvSpec]) -> None:
    for lineno, tok in _tokens(text):
        where = f"{source}:{lineno}"
        if tok.startswith("--"):
            opt, _, value = tok[2:].partition("=")
            if opt == "reset":
                state.cfgs, state.mbs = [("--cfg=f32", "float32")], [0]
            elif opt in ("cfg", "dt"):
                if not value:
                    raise SuiteFormatError(where, None, f"--{opt} needs a value, e.g. --{opt}=f32")
                state.cfgs = []
                for v in value.split(","):
                    dt, note = cfg_to_dtype(v)
                    if note:
                        state.notes[note] = None
                    state.cfgs.append((f"--{opt}={v}", dt))
            elif opt == "mb":
                try:
                    mbs = [int(v) for v in value.split(",")]
                except ValueError:
                    mbs = [-1]
                if not value or any(v < 0 for v in mbs):
                    raise SuiteFormatError(where, "--mb", f"--mb={value!r} must be a comma-separated "
                                           f"list of integers >= 0 (0 keeps the descriptor's mb)")
                state.mbs = mbs
            elif opt == "batch":
                _include(value, where, base_dir, state, overrides, out)
            elif opt in ("conv", "deconv") and not value:
                state.transposed = opt == "deconv"
            elif opt == "dir":
                other = ",".join(d for d in value.split(",") if d.upper() not in _FORWARD_DIRS)
                if other:
                    state.ignored[f"--dir={other}"] = state.ignored.get(f"--dir={other}", 0) + 1
            else:
                state.ignored[f"--{opt}"] = state.ignored.get(f"--{opt}", 0) + 1
            continue
        if tok.startswith("-"):
            state.ignored[tok] = state.ignored.get(tok, 0) + 1
            continue
        cfgs = [("dtype", overrides["dtype"])] if "dtype" in overrides else state.cfgs
        for cfg_name, dt in cfgs:
            if dt is None:
                state.skipped_cfg[cfg_name] = state.skipped_cfg.get(cfg_name, 0) + 1
                continue
            for mb in state.mbs:
                fields: dict[str, Any] = {"dtype": dt}
                if mb:
                    fields["n"] = mb
                fields.update(overrides)
                try:
                    out.append(parse_descriptor(tok, transposed=state.transposed, **fields))
                except InvalidSpecError as exc:
                    raise SuiteFormatError(where, None, str(exc)) from None


def _include(value: str, where: str, base_dir: Path, state: _State, overrides: dict[str, Any],
             out: list[ConvSpec]) -> None:
    if not value:
        raise SuiteFormatError(where, "--batch", "--batch needs a file name")
    rel = Path(value)
    candidates = [rel] if rel.is_absolute() else \
        [base_dir / rel] + [p.parent / rel for p in reversed(state.stack)] + [rel]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
        raise SuiteFormatError(where, None, f"--batch={value}: file not found (looked in: {looked})")
    path = path.resolve()
    if path in state.stack:
        raise SuiteFormatError(where, None, f"--batch={value} includes {path} again (a cycle)")
    state.stack.append(path)
    try:
        _batch(_read_text(path, where), str(path), path.parent, state, overrides, out)
    finally:
        state.stack.pop()


def _read_text(path: Path, where: str = "") -> str:
    """A batch file's text (SuiteFormatError if it is not UTF-8 text)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        by = f" (included at {where})" if where else ""
        raise SuiteFormatError(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                           f"a benchdnn batch file is text{by}") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _warn(state: _State, source: str) -> None:
    if state.ignored:
        listed = ", ".join(f"{k} ({n}x)" for k, n in state.ignored.items())
        warnings.warn(f"{source}: ignored benchdnn options: {listed}; convbench reads shapes, "
                      f"--cfg/--dt, --mb, --batch, --reset, --conv/--deconv and measures plain "
                      f"forward convolution", BenchdnnWarning, stacklevel=3)
    if state.skipped_cfg:
        listed = ", ".join(f"{k} ({n} problems)" for k, n in state.skipped_cfg.items())
        warnings.warn(f"{source}: skipped descriptors under unsupported data types: {listed}; "
                      f"convbench supports f64, f32, f16, bf16 and int8 (s8 or u8 source, s8 weights, "
                      f"s8 or u8 destination)", BenchdnnWarning, stacklevel=3)
    for note in state.notes:
        warnings.warn(f"{source}: {note}", BenchdnnWarning, stacklevel=3)


def parse_batch_text(text: str, source: str = "<batch>", *, transposed: bool = False,
                     base_dir: str | os.PathLike[str] | None = None,
                     **overrides: Any) -> list[ConvSpec]:
    """Read benchdnn batch-file text: descriptors (whitespace-separated; ``#`` comments).

    Options, which apply to the descriptors after them as in benchdnn: ``--cfg=``/``--dt=``
    (comma lists; float types map to dtypes, mixed float ones to the narrower type with a
    warning, 8-bit integer ones to int8 (u8 read as s8, with a warning), other integer and
    fp8 ones skip their descriptors with a warning; see :func:`cfg_to_dtype`), ``--mb=`` (comma list,
    0 keeps the descriptor's mb), ``--reset``, ``--batch=FILE`` (read relative to the
    including file, then ``base_dir``), ``--conv``/``--deconv`` (switch the meaning of the
    descriptors). Every other option (``--dir`` other than FWD_*, ``--stag``, ``--alg``,
    ``--attr-*``, ``--skip-impl``, ``-v1``...) is ignored with one BenchdnnWarning listing them.
    ``overrides`` are ConvSpec fields applied to every problem (they win over ``--cfg``/``--mb``).
    Malformed content raises SuiteError naming source and line.
    """
    state = _State(transposed=transposed)
    base = Path(base_dir) if base_dir is not None else (
        Path(source).parent if Path(source).is_file() else Path.cwd())
    out: list[ConvSpec] = []
    _batch(text, source, base, state, overrides, out)
    _warn(state, source)
    return out


def read_batch_file(path: str | os.PathLike[str], *, transposed: bool = False,
                    **overrides: Any) -> list[ConvSpec]:
    """Read a benchdnn batch file (see :func:`parse_batch_text`) into a list of ConvSpecs."""
    p = Path(path)
    if not p.is_file():
        raise SuiteError(f"benchdnn batch file {str(p)!r} not found")
    state = _State(transposed=transposed, stack=[p.resolve()])
    out: list[ConvSpec] = []
    _batch(_read_text(p), str(p), p.resolve().parent, state, overrides, out)
    _warn(state, str(p))
    return out
