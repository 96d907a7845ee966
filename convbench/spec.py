"""ConvSpec: one convolution problem, validated, with everything derived from it.

Conventions follow PyTorch: convolution is cross-correlation; activations are
``(N, C, *spatial)`` (channels_first) or ``(N, *spatial, C)`` (channels_last); weights are
``(C_out, C_in/groups, *k)``, and ``(C_in, C_out/groups, *k)`` for transposed convolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InvalidSpecError
from .quant import as_quant_params, is_quantized

#: floating-point dtypes (verified norm-wise against the float64 reference)
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
#: every dtype a problem can have; "int8" is quantized (:mod:`convbench.quant`)
DTYPES = FLOAT_DTYPES + ("int8",)
LAYOUTS = ("channels_first", "channels_last")

_DTYPE_ALIASES = {
    "float64": "float64", "f64": "float64", "fp64": "float64", "double": "float64",
    "float32": "float32", "f32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "f16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "int8": "int8", "s8": "int8", "i8": "int8",
}
_LAYOUT_ALIASES = {
    "channels_first": "channels_first", "ncw": "channels_first", "nchw": "channels_first",
    "ncdhw": "channels_first", "cf": "channels_first", "first": "channels_first",
    "channels_last": "channels_last", "nwc": "channels_last", "nhwc": "channels_last",
    "ndhwc": "channels_last", "cl": "channels_last", "last": "channels_last",
}

# Norm-wise relative error bounds per dtype (DESIGN.md, "Measuring").
TOLERANCES = {"float64": 1e-10, "float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 2e-2}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a convbench dtype name (bfloat16 through ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def canonical_dtype(dtype: Any) -> str:
    """Map a dtype name, alias or numpy dtype onto one of DTYPES, or raise InvalidSpecError."""
    name = dtype
    if not isinstance(dtype, str):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    key = str(name).lower().rpartition(".")[2]  # "float32", "np.float32", "<framework>.float32"
    if key not in _DTYPE_ALIASES:
        raise InvalidSpecError(f"dtype: {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return _DTYPE_ALIASES[key]


def _check_int(fieldname: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidSpecError(f"{fieldname}: {value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise InvalidSpecError(f"{fieldname}: {value!r} must be >= {minimum}")
    return int(value)


def _per_dim(fieldname: str, value: Any, dims: int, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise InvalidSpecError(
                f"{fieldname}: {tuple(value)!r} has {len(value)} entries but the problem is "
                f"{dims}-D (input_size has {dims}); give {dims} values or one scalar")
        return tuple(_check_int(f"{fieldname}[{i}]", v, minimum) for i, v in enumerate(value))
    return (_check_int(fieldname, value, minimum),) * dims


@dataclass(frozen=True, eq=True)
class ConvSpec:
    """One convolution problem.

    ``padding`` accepts an int, one int per spatial dim, one ``(before, after)`` pair per
    spatial dim (asymmetric), ``"valid"`` or ``"same"``; it is stored as pairs.
    ``"same"`` with stride > 1 is accepted only where the total padding per dim is even
    (otherwise frameworks disagree on which side gets the extra row: TensorFlow pads after,
    others before) and never for transposed convolution.
    """

    n: int
    c_in: int
    c_out: int
    input_size: tuple[int, ...]
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    transposed: bool = False
    output_padding: Any = 0
    dtype: Any = "float32"
    layout: str = "channels_first"
    name: str = field(default="", compare=False)
    #: int8 only: the user's scales (:func:`convbench.quant.as_quant_params`), None for the
    #: documented default; not part of the problem's identity (key, ==, hash)
    quant: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "n", _check_int("n", self.n, 1))
        s(self, "c_in", _check_int("c_in", self.c_in, 1))
        s(self, "c_out", _check_int("c_out", self.c_out, 1))
        size = self.input_size
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            raise InvalidSpecError(
                f"input_size: {size!r} must be a tuple of 1, 2 or 3 spatial sizes, e.g. (56, 56)")
        if not isinstance(size, (list, tuple)) or not 1 <= len(size) <= 3:
            raise InvalidSpecError(
                f"input_size: {size!r} must be a tuple of 1, 2 or 3 spatial sizes (1D, 2D, 3D)")
        s(self, "input_size", tuple(_check_int(f"input_size[{i}]", v, 1) for i, v in enumerate(size)))
        d = len(self.input_size)
        s(self, "kernel_size", _per_dim("kernel_size", self.kernel_size, d, 1))
        s(self, "stride", _per_dim("stride", self.stride, d, 1))
        s(self, "dilation", _per_dim("dilation", self.dilation, d, 1))
        s(self, "groups", _check_int("groups", self.groups, 1))
        if not isinstance(self.transposed, (bool, np.bool_)):
            raise InvalidSpecError(f"transposed: {self.transposed!r} must be True or False")
        s(self, "transposed", bool(self.transposed))
        s(self, "output_padding", _per_dim("output_padding", self.output_padding, d, 0))
        s(self, "dtype", canonical_dtype(self.dtype))
        lay = str(self.layout).lower()
        if lay not in _LAYOUT_ALIASES:
            raise InvalidSpecError(
                f"layout: {self.layout!r} is not supported; use 'channels_first' or 'channels_last'")
        s(self, "layout", _LAYOUT_ALIASES[lay])
        if not isinstance(self.name, str):
            raise InvalidSpecError(f"name: {self.name!r} must be a string")
        if self.quant is not None:
            if not is_quantized(self.dtype):
                raise InvalidSpecError(f"quant: scales are only for quantized problems "
                                       f"(dtype int8); this problem's dtype is {self.dtype}")
            s(self, "quant", as_quant_params(self.quant, self.c_out))

        if self.c_in % self.groups:
            raise InvalidSpecError(
                f"groups: c_in={self.c_in} is not divisible by groups={self.groups}")
        if self.c_out % self.groups:
            raise InvalidSpecError(
                f"groups: c_out={self.c_out} is not divisible by groups={self.groups}")
        s(self, "padding", self._normalize_padding(self.padding))

        if not self.transposed and any(self.output_padding):
            raise InvalidSpecError(
                f"output_padding: {self.output_padding} is only meaningful for transposed=True")
        for i, (op, st, dl) in enumerate(zip(self.output_padding, self.stride, self.dilation)):
            if op and op >= max(st, dl):
                raise InvalidSpecError(
                    f"output_padding[{i}]: {op} must be smaller than stride ({st}) or dilation "
                    f"({dl}) in that dimension")
        for i in range(d):
            ek = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            pb, pa = self.padding[i]
            if self.transposed:
                out = (self.input_size[i] - 1) * self.stride[i] + ek + self.output_padding[i] - pb - pa
                if out < 1:
                    raise InvalidSpecError(
                        f"padding[{i}]: ({pb}, {pa}) crops the transposed output of size "
                        f"{out + pb + pa} to {out}; the output must keep at least 1 element")
            else:
                padded = self.input_size[i] + pb + pa
                if ek > padded:
                    raise InvalidSpecError(
                        f"kernel_size[{i}]: the dilated kernel spans {ek} elements but the padded "
                        f"input is only {padded} (input_size[{i}]={self.input_size[i]}, "
                        f"padding={(pb, pa)}, dilation={self.dilation[i]})")

    def _normalize_padding(self, pad: Any) -> tuple[tuple[int, int], ...]:
        d = len(self.input_size)
        if isinstance(pad, str):
            mode = pad.lower()
            if mode == "valid":
                return ((0, 0),) * d
            if mode != "same":
                raise InvalidSpecError(
                    f"padding: {pad!r} is not a padding; use an int, per-dim ints or "
                    f"(before, after) pairs, 'same' or 'valid'")
            if self.transposed:
                raise InvalidSpecError(
                    "padding: 'same' is not defined for transposed convolution; give explicit padding")
            pairs = []
            for i in range(d):
                ek = self.dilation[i] * (self.kernel_size[i] - 1) + 1
                st = self.stride[i]
                out = -(-self.input_size[i] // st)
                total = max((out - 1) * st + ek - self.input_size[i], 0)
                if st > 1 and total % 2:
                    raise InvalidSpecError(
                        f"padding: 'same' with stride[{i}]={st} needs {total} padding rows in dim "
                        f"{i}, an odd count frameworks split differently; give explicit "
                        f"(before, after) pairs instead")
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        if isinstance(pad, (list, tuple)):
            if len(pad) != d:
                raise InvalidSpecError(
                    f"padding: {tuple(pad)!r} has {len(pad)} entries but the problem is {d}-D; "
                    f"give {d} ints or {d} (before, after) pairs")
            pairs = []
            for i, p in enumerate(pad):
                if isinstance(p, (list, tuple)):
                    if len(p) != 2:
                        raise InvalidSpecError(
                            f"padding[{i}]: {tuple(p)!r} must be an int or a (before, after) pair")
                    pairs.append((_check_int(f"padding[{i}][0]", p[0], 0),
                                  _check_int(f"padding[{i}][1]", p[1], 0)))
                else:
                    v = _check_int(f"padding[{i}]", p, 0)
                    pairs.append((v, v))
            return tuple(pairs)
        v = _check_int("padding", pad, 0)
        return ((v, v),) * d

    # ---- derived -------------------------------------------------------------------------
    @property
    def dims(self) -> int:
        return len(self.input_size)

    @property
    def symmetric_padding(self) -> bool:
        return all(a == b for a, b in self.padding)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c_in

    @property
    def output_size(self) -> tuple[int, ...]:
        out = []
        for i in range(self.dims):
            ek = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            pb, pa = self.padding[i]
            if self.transposed:
                out.append((self.input_size[i] - 1) * self.stride[i] + ek + self.output_padding[i] - pb - pa)
            else:
                out.append((self.input_size[i] + pb + pa - ek) // self.stride[i] + 1)
        return tuple(out)

    def _activation_shape(self, channels: int, spatial: Sequence[int]) -> tuple[int, ...]:
        if self.layout == "channels_last":
            return (self.n, *spatial, channels)
        return (self.n, channels, *spatial)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._activation_shape(self.c_in, self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._activation_shape(self.c_out, self.output_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.c_in, self.c_out // self.groups, *self.kernel_size)
        return (self.c_out, self.c_in // self.groups, *self.kernel_size)

    @property
    def flops(self) -> int:
        """2 * N * C_out * (C_in/groups) * prod(k) * prod(out_spatial), padded positions included.

        A transposed convolution counts as its equivalent direct convolution (the one whose
        gradient it is): 2 * N * C_in * (C_out/groups) * prod(k) * prod(input_spatial).
        """
        kprod = math.prod(self.kernel_size)
        if self.transposed:
            return 2 * self.n * self.c_in * (self.c_out // self.groups) * kprod * math.prod(self.input_size)
        return 2 * self.n * self.c_out * (self.c_in // self.groups) * kprod * math.prod(self.output_size)

    @property
    def itemsize(self) -> int:
        return {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[self.dtype]

    @property
    def bytes(self) -> int:
        """Compulsory traffic: input, weights and output read or written once, in spec.dtype."""
        return self.itemsize * (math.prod(self.input_shape) + math.prod(self.weight_shape)
                                + math.prod(self.output_shape))

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte of compulsory traffic."""
        return self.flops / self.bytes

    @property
    def key(self) -> str:
        """A stable, canonical string identifying the problem (the name is not part of it)."""
        def j(t: Iterable[Any]) -> str:
            return "x".join(str(v) for v in t)

        pad = "x".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.padding)
        parts = [
            f"conv{self.dims}d", "bwd" if self.transposed else "fwd", f"n{self.n}",
            f"c{self.c_in}-{self.c_out}", f"i{j(self.input_size)}", f"k{j(self.kernel_size)}",
            f"s{j(self.stride)}", f"p{pad}", f"d{j(self.dilation)}", f"g{self.groups}",
        ]
        if self.transposed:
            parts.append(f"op{j(self.output_padding)}")
        parts += [self.dtype, "cl" if self.layout == "channels_last" else "cf"]
        return "/".join(parts)

    @property
    def label(self) -> str:
        """A short human-readable description, e.g. ``2d n1 64->64 56x56 k3 s1 p1 f32``."""
        def short(t: Sequence[int]) -> str:
            return str(t[0]) if len(set(t)) == 1 else "x".join(map(str, t))

        parts = [f"{self.dims}d", f"n{self.n}", f"{self.c_in}->{self.c_out}",
                 "x".join(map(str, self.input_size)), f"k{short(self.kernel_size)}"]
        if any(v != 1 for v in self.stride):
            parts.append(f"s{short(self.stride)}")
        if any(a or b for a, b in self.padding):
            if self.symmetric_padding:
                parts.append(f"p{short([a for a, _ in self.padding])}")
            else:
                parts.append("p" + "x".join(f"{a}-{b}" for a, b in self.padding))
        if any(v != 1 for v in self.dilation):
            parts.append(f"d{short(self.dilation)}")
        if self.groups > 1:
            parts.append("dw" if self.depthwise and self.c_out == self.c_in else f"g{self.groups}")
        if self.transposed:
            parts.append("T")
        parts.append({"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
                      "int8": "s8"}[self.dtype])
        if self.layout == "channels_last":
            parts.append("cl")
        text = " ".join(parts)
        return f"{self.name}: {text}" if self.name else text

    def __hash__(self) -> int:
        return hash(self.key)

    # ---- conversions ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ConvSpec":
        """A copy with some fields changed (validated again). A change of dtype to a float
        type drops the int8 scales (``quant``) unless ``changes`` gives them."""
        fields = self.to_dict()
        fields.update(changes)
        if "quant" not in changes and fields.get("quant") is not None \
                and not is_quantized(canonical_dtype(fields.get("dtype", self.dtype))):
            del fields["quant"]
        return ConvSpec(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields; ``ConvSpec(**d)`` rebuilds the same spec (``quant``, the
        int8 scales, only when set)."""
        out = {
            "n": self.n, "c_in": self.c_in, "c_out": self.c_out,
            "input_size": list(self.input_size), "kernel_size": list(self.kernel_size),
            "stride": list(self.stride), "padding": [list(p) for p in self.padding],
            "dilation": list(self.dilation), "groups": self.groups,
            "transposed": self.transposed, "output_padding": list(self.output_padding),
            "dtype": self.dtype, "layout": self.layout, "name": self.name,
        }
        if self.quant is not None:
            out["quant"] = self.quant.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvSpec":
        """Inverse of to_dict; unknown fields raise InvalidSpecError naming them."""
        if not isinstance(data, dict):
            raise InvalidSpecError(f"a spec must be a table/dict of fields, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpecError(
                f"unknown spec field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}")
        missing = [f for f in ("n", "c_in", "c_out", "input_size", "kernel_size") if f not in data]
        if missing:
            raise InvalidSpecError(f"spec is missing required field(s): {', '.join(missing)}")
        return cls(**data)

    @classmethod
    def from_benchdnn(cls, desc: str, **overrides: Any) -> "ConvSpec":
        """Parse a oneDNN benchdnn convolution descriptor, e.g. ``mb1ic64ih56oc64kh3ph1n"res2a"``."""
        from .benchdnn import parse_descriptor

        return parse_descriptor(desc, **overrides)

    def to_benchdnn(self) -> str:
        """This problem as a benchdnn descriptor (canonical form, every dimension spelled out)."""
        from .benchdnn import format_descriptor

        return format_descriptor(self)

    def __repr__(self) -> str:
        pad = self.padding
        if self.symmetric_padding:
            vals = [a for a, _ in pad]
            pad = vals[0] if len(set(vals)) == 1 else tuple(vals)
        body = (f"n={self.n}, c_in={self.c_in}, c_out={self.c_out}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={pad}, "
                f"dilation={self.dilation}, groups={self.groups}")
        if self.transposed:
            body += f", transposed=True, output_padding={self.output_padding}"
        body += f", dtype={self.dtype!r}, layout={self.layout!r}"
        if self.name:
            body += f", name={self.name!r}"
        if self.quant is not None:
            body += f", quant={self.quant!r}"
        return f"ConvSpec({body})"
