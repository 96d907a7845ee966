"""The float64 reference, make_inputs and relative_error.

Checked against numbers computed by hand (worked out in the comments), the adjoint identity
between a convolution and its transpose, an independent float32 sliding-window computation
and torch.nn.functional's convolutions.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import convbench as cb
from convbench import ConvSpec, InvalidInputError, InvalidSpecError
from convbench.reference import (check_inputs, from_channels_first, make_inputs, reference,
                                 relative_error, to_channels_first, tolerance)
from convbench.spec import numpy_dtype
from test_spec import valid_specs


def spec1d(i, k, c_in=1, c_out=1, **kw):
    return ConvSpec(n=1, c_in=c_in, c_out=c_out, input_size=(i,), kernel_size=k, dtype="float64", **kw)


def run(spec, x, w):
    x = np.asarray(x, dtype=np.float64).reshape(spec.input_shape)
    w = np.asarray(w, dtype=np.float64).reshape(spec.weight_shape)
    return reference(spec, x, w)


# ---- hand-computed ---------------------------------------------------------------------------------

X5 = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kw,x,w,expected", [
    # y[j] = x[j] - x[j+2]
    (dict(), X5, [1, 0, -1], [-2, -2, -2]),
    # padded [0,1,2,3,4,5,0]: [0-2, 1-3, 2-4, 3-5, 4-0]
    (dict(padding=1), X5, [1, 0, -1], [-2, -2, -2, -2, 4]),
    # every second of the above
    (dict(padding=1, stride=2), X5, [1, 0, -1], [-2, -2, 4]),
    # dilation 2: taps x[j], x[j+2], x[j+4]: 1+3+5, 2+4+6
    (dict(dilation=2), [1, 2, 3, 4, 5, 6], [1, 1, 1], [9, 12]),
    # padding (2, 0): [0,0,1,2,3], y[j] = xp[j] + 2*xp[j+1]
    (dict(padding=((2, 0),)), [1, 2, 3], [1, 2], [0, 2, 5, 8]),
    # padding (0, 1), stride 2: [1,2,3,0]: j=0: 1+4, j=2: 3+0
    (dict(padding=((0, 1),), stride=2), [1, 2, 3], [1, 2], [5, 3]),
])
def test_hand_1d(kw, x, w, expected):
    s = spec1d(len(x), len(w), **kw)
    np.testing.assert_array_equal(run(s, x, w).ravel(), expected)


def test_hand_channels_and_groups():
    # 2 in -> 1 out: y[j] = x0[j] + x1[j+1] with w = [[1, 0], [0, 1]]
    s = spec1d(3, 2, c_in=2, c_out=1)
    y = run(s, [[1, 2, 3], [10, 20, 30]], [[[1, 0], [0, 1]]])
    np.testing.assert_array_equal(y, [[[21, 32]]])
    # groups=2: channel 0 with [1, 1] -> [3, 5]; channel 1 with [1, -1] -> [-10, -10]
    g = spec1d(3, 2, c_in=2, c_out=2, groups=2)
    y = run(g, [[1, 2, 3], [10, 20, 30]], [[[1, 1]], [[1, -1]]])
    np.testing.assert_array_equal(y, [[[3, 5], [-10, -10]]])
    # groups=2, 2 -> 4: output channels 0,1 see input 0 only, 2,3 see input 1
    g4 = spec1d(1, 1, c_in=2, c_out=4, groups=2)
    y = run(g4, [[1], [2]], [[[1]], [[2]], [[3]], [[4]]])
    np.testing.assert_array_equal(y.ravel(), [1, 2, 6, 8])


@pytest.mark.parametrize("kw,x,w,expected", [
    # stride 2: 1*[1,10,100] at 0, 2*[1,10,100] at 2 -> [1, 10, 102, 20, 200]
    (dict(stride=2), [1, 2], [1, 10, 100], [1, 10, 102, 20, 200]),
    # padding 1 crops one from each side
    (dict(stride=2, padding=1), [1, 2], [1, 10, 100], [10, 102, 20]),
    # output_padding 1 adds a zero row at the end before cropping: [1,10,102,20,200,0][1:5]
    (dict(stride=2, padding=1, output_padding=1), [1, 2], [1, 10, 100], [10, 102, 20, 200]),
    # asymmetric padding (0, 2)
    (dict(stride=2, padding=((0, 2),)), [1, 2], [1, 10, 100], [1, 10, 102]),
    # dilation 2: x0 taps at 0,2,4; x1 at 1,3,5
    (dict(dilation=2), [1, 2], [1, 10, 100], [1, 2, 10, 20, 100, 200]),
])
def test_hand_transposed_1d(kw, x, w, expected):
    s = spec1d(len(x), len(w), transposed=True, **kw)
    np.testing.assert_array_equal(run(s, x, w).ravel(), expected)


def test_hand_transposed_groups():
    # weight (C_in=2, C_out/g=2, k=1): input 0 feeds outputs 0,1; input 1 feeds outputs 2,3
    s = spec1d(1, 1, c_in=2, c_out=4, groups=2, transposed=True)
    y = run(s, [[1], [2]], [[[3], [4]], [[5], [6]]])
    np.testing.assert_array_equal(y.ravel(), [3, 4, 10, 12])


X33 = np.arange(1, 10).reshape(3, 3)


def test_hand_2d():
    s = ConvSpec(n=1, c_in=1, c_out=1, input_size=(3, 3), kernel_size=2, dtype="float64")
    # y[i,j] = x[i,j] + x[i+1,j+1]: [[1+5, 2+6], [4+8, 5+9]]
    np.testing.assert_array_equal(run(s, X33, [[1, 0], [0, 1]])[0, 0], [[6, 8], [12, 14]])
    s2 = s.replace(kernel_size=3, stride=2, padding=1)
    # 2x2 windows of the padded input summed: 1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9
    np.testing.assert_array_equal(run(s2, X33, np.ones(9))[0, 0], [[12, 16], [24, 28]])


def test_hand_2d_channels_last():
    cf = ConvSpec(n=1, c_in=2, c_out=1, input_size=(3, 3), kernel_size=2, dtype="float64")
    cl = cf.replace(layout="channels_last")
    w = np.array([[[[1, 0], [0, 1]], [[0, 0], [0, 1]]]], dtype=np.float64)
    x_cf = np.stack([X33, 10 * X33])[None].astype(np.float64)
    x_cl = np.ascontiguousarray(np.moveaxis(x_cf, 1, -1))
    # ch0 diagonal pairs + 10 * x[i+1, j+1]: 6+50, 8+60, 12+80, 14+90
    expected = np.array([[56, 68], [92, 104]], dtype=np.float64)
    np.testing.assert_array_equal(reference(cf, x_cf, w)[0, 0], expected)
    y_cl = reference(cl, x_cl, w)
    assert y_cl.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(y_cl[0, :, :, 0], expected)


def test_hand_3d():
    s = ConvSpec(n=1, c_in=1, c_out=1, input_size=(2, 2, 2), kernel_size=2, dtype="float64")
    assert run(s, np.arange(1, 9), np.ones(8)).item() == 36          # 1 + ... + 8
    t = s.replace(input_size=(1, 1, 1), transposed=True)
    y = run(t, [2], np.arange(1, 9))
    np.testing.assert_array_equal(y.ravel(), 2 * np.arange(1, 9))   # the kernel, scaled


# ---- adjoint identity ------------------------------------------------------------------------------

def transpose_of(d: ConvSpec) -> ConvSpec:
    """The transposed spec whose output is d's input (same weights)."""
    ops = []
    for i, o, k, s, dl, (pb, pa) in zip(d.input_size, d.output_size, d.kernel_size, d.stride,
                                        d.dilation, d.padding):
        ops.append(i - ((o - 1) * s + dl * (k - 1) + 1 - pb - pa))
    return ConvSpec(n=d.n, c_in=d.c_out, c_out=d.c_in, input_size=d.output_size,
                    kernel_size=d.kernel_size, stride=d.stride, padding=d.padding,
                    dilation=d.dilation, groups=d.groups, transposed=True,
                    output_padding=tuple(ops), dtype="float64", layout=d.layout)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs(transposed=False))
def test_adjoint_identity(d):
    d = d.replace(dtype="float64")
    t = transpose_of(d)
    assert t.output_size == d.input_size and t.weight_shape == d.weight_shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal(d.input_shape)
    w = rng.standard_normal(d.weight_shape)
    y = rng.standard_normal(d.output_shape)
    lhs = np.vdot(reference(d, x, w), y)
    rhs = np.vdot(x, reference(t, y, w))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


# ---- against torch ---------------------------------------------------------------------------------

def torch_conv(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """spec's convolution via torch.nn.functional in float64 (asymmetric padding via F.pad)."""
    import torch
    F = torch.nn.functional
    d = spec.dims
    xt = torch.from_numpy(np.ascontiguousarray(to_channels_first(x, spec.layout))).double()
    wt = torch.from_numpy(w).double()
    if not spec.transposed:
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        if spec.symmetric_padding:
            y = conv(xt, wt, stride=spec.stride, padding=[p for p, _ in spec.padding],
                     dilation=spec.dilation, groups=spec.groups)
        else:
            pads = [p for pair in reversed(spec.padding) for p in pair]
            y = conv(F.pad(xt, pads), wt, stride=spec.stride, dilation=spec.dilation,
                     groups=spec.groups)
    else:
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1]
        if spec.symmetric_padding:
            y = conv(xt, wt, stride=spec.stride, padding=[p for p, _ in spec.padding],
                     output_padding=spec.output_padding, dilation=spec.dilation,
                     groups=spec.groups)
        else:   # full transposed output, zero rows for output_padding, then crop
            y = conv(xt, wt, stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
            y = F.pad(y, [v for op in reversed(spec.output_padding) for v in (0, op)])
            crop = tuple(slice(pb, n - pa) for (pb, pa), n in zip(spec.padding, y.shape[2:]))
            y = y[(slice(None), slice(None), *crop)]
    return from_channels_first(y.numpy(), spec.layout)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_matches_torch(spec):
    pytest.importorskip("torch", reason="torch not installed: cannot compare with torch.nn.functional")
    spec = spec.replace(dtype="float64")
    x, w = make_inputs(spec, seed=1)
    expected = torch_conv(spec, x, w)
    got = reference(spec, x, w)
    assert got.shape == spec.output_shape == expected.shape
    assert relative_error(got, expected) < 1e-12
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spec", [
    ConvSpec(n=2, c_in=3, c_out=8, input_size=(17, 13), kernel_size=(3, 5), stride=(2, 1),
             padding=((1, 2), (2, 0)), dilation=(1, 2), dtype="float64"),
    ConvSpec(n=1, c_in=8, c_out=8, input_size=(9, 9), kernel_size=3, padding=1, groups=8,
             layout="channels_last", dtype="float64"),
    ConvSpec(n=2, c_in=4, c_out=6, input_size=(4, 5, 6), kernel_size=(2, 3, 1), stride=2,
             padding=((0, 1), 1, 0), dtype="float64"),
    ConvSpec(n=1, c_in=6, c_out=4, input_size=(7, 6), kernel_size=3, stride=2, padding=1,
             output_padding=(1, 0), groups=2, transposed=True, dtype="float64"),
    ConvSpec(n=2, c_in=4, c_out=2, input_size=(3, 4, 2), kernel_size=2, stride=(1, 2, 3),
             dilation=(2, 1, 1), padding=((1, 0), (0, 2), (1, 1)), output_padding=(1, 1, 2),
             transposed=True, layout="channels_last", dtype="float64"),
    ConvSpec(n=3, c_in=5, c_out=7, input_size=(20,), kernel_size=4, stride=3, dilation=2,
             padding=((3, 0),), dtype="float64"),
], ids=lambda s: s.label)
def test_matches_torch_larger(spec):
    pytest.importorskip("torch", reason="torch not installed: cannot compare with torch.nn.functional")
    x, w = make_inputs(spec, seed=2)
    np.testing.assert_allclose(reference(spec, x, w), torch_conv(spec, x, w), rtol=1e-10, atol=1e-12)


# ---- make_inputs ------------------------------------------------------------------------------------

SPEC = ConvSpec(n=2, c_in=4, c_out=6, input_size=(5, 7), kernel_size=3, groups=2)


def test_make_inputs_reproducible():
    x1, w1 = make_inputs(SPEC, seed=7)
    x2, w2 = make_inputs(SPEC, seed=7)
    x3, w3 = make_inputs(SPEC, seed=8)
    assert np.array_equal(x1, x2) and np.array_equal(w1, w2)
    assert not np.array_equal(x1, x3) and not np.array_equal(w1, w3)
    e1, e2 = make_inputs(SPEC, seed=7, fill="exact"), make_inputs(SPEC, seed=7, fill="exact")
    assert np.array_equal(e1[0], e2[0]) and np.array_equal(e1[1], e2[1])
    assert not np.array_equal(e1[0], make_inputs(SPEC, seed=8, fill="exact")[0])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_make_inputs_dtype_layout(dtype, layout):
    s = SPEC.replace(dtype=dtype, layout=layout)
    x, w = make_inputs(s)
    assert x.shape == s.input_shape and w.shape == s.weight_shape
    assert x.dtype == w.dtype == numpy_dtype(dtype)
    if dtype == "bfloat16":
        assert x.dtype.name == "bfloat16"
    assert x.flags.c_contiguous and w.flags.c_contiguous
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert np.all(np.abs(x64) <= 1) and np.all(np.isfinite(x64))
    fan_in = 2 * 9                                             # C_in/g * kh * kw
    assert np.all(np.abs(w64) <= 1 / np.sqrt(fan_in) * 1.01)
    assert x64.std() > 0.3                                      # not degenerate (uniform: 0.577)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_exact_fill_small_integers(dtype):
    s = SPEC.replace(dtype=dtype, layout="channels_last")
    x, w = make_inputs(s, seed=3, fill="exact")
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert np.array_equal(x64, np.round(x64)) and np.array_equal(w64, np.round(w64))
    assert set(np.unique(x64)) <= {-2, -1, 0, 1, 2} and set(np.unique(w64)) <= {-1, 0, 1}
    assert len(np.unique(x64)) == 5 and len(np.unique(w64)) == 3
    y = reference(s, x, w)
    assert np.array_equal(y, np.round(y))


def test_bad_fill():
    with pytest.raises(InvalidSpecError, match="fill"):
        make_inputs(SPEC, fill="zeros")


def direct_float32(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Independent 2D direct convolution in float32: padded sliding windows + einsum."""
    from numpy.lib.stride_tricks import sliding_window_view

    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    kh, kw = spec.kernel_size
    xp = np.pad(x.astype(np.float32), [(0, 0), (0, 0), *spec.padding])
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    oh, ow = spec.output_size
    win = win[:, :, ::sh, ::sw][:, :, :oh, :ow, ::dh, ::dw]
    return np.einsum("nchwij,ocij->nohw", win, w.astype(np.float32), dtype=np.float32)


def test_exact_fill_gives_bitwise_equality_in_float32():
    s = ConvSpec(n=2, c_in=8, c_out=5, input_size=(11, 9), kernel_size=3, stride=(2, 1),
                 padding=((1, 0), (2, 1)), dilation=(1, 2), dtype="float32")
    x, w = make_inputs(s, seed=5, fill="exact")
    y32 = direct_float32(s, x, w)
    ref = reference(s, x, w)
    # |sum| <= 8*9 terms of |2*1| = 144: every partial sum is an exact float32 integer
    assert np.abs(ref).max() <= 144
    assert np.array_equal(y32, ref.astype(np.float32))
    # random fill: the same computation is not bitwise equal, only close
    xr, wr = make_inputs(s, seed=5)
    assert relative_error(direct_float32(s, xr, wr), reference(s, xr, wr)) < 1e-6


# ---- relative_error, tolerance, check_inputs -------------------------------------------------------

def test_relative_error():
    e = np.array([3.0, 4.0])                                   # norm 5
    assert relative_error(e.copy(), e) == 0.0
    assert relative_error(np.array([3.0, 4.5]), e) == pytest.approx(0.1)   # 0.5 / 5
    assert relative_error(np.array([0.0, 0.0]), e) == pytest.approx(1.0)
    assert relative_error(e * (1 + 1e-3), e) == pytest.approx(1e-3)
    assert relative_error(np.array([np.nan, 4.0]), e) == float("inf")
    assert relative_error(np.array([np.inf, 4.0]), e) == float("inf")
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert relative_error(np.array([1e-30, 0.0]), np.zeros(2)) == float("inf")
    bf = e.astype(numpy_dtype("bfloat16"))
    assert relative_error(bf, e) == 0.0                         # 3 and 4 are exact in bf16
    assert relative_error(np.float32(1 / 3) * np.ones(4), np.ones(4) / 3) < 1e-7
    with pytest.raises(InvalidInputError, match="shape"):
        relative_error(np.zeros(3), np.zeros(4))


def test_tolerance():
    assert tolerance("float64") == 1e-10 and tolerance("float32") == 1e-4
    assert tolerance("tf32") == 5e-3 and tolerance("float16") == 5e-3
    assert tolerance("bfloat16") == 2e-2
    assert tolerance("int8") == 1.0  # one LSB
    with pytest.raises(InvalidSpecError, match="int4"):
        tolerance("int4")


def test_check_inputs():
    x, w = make_inputs(SPEC)
    check_inputs(SPEC, x, w)
    with pytest.raises(InvalidInputError, match="x: shape"):
        check_inputs(SPEC, x[:1], w)
    with pytest.raises(InvalidInputError, match="w: shape"):
        reference(SPEC, x, w[:, :1])
    with pytest.raises(InvalidInputError, match="dtype"):
        check_inputs(SPEC, x.astype(np.float64), w)
    with pytest.raises(InvalidInputError, match="array"):
        check_inputs(SPEC, x.tolist(), w)
    # the reference itself accepts any float dtype of the right shape
    y = reference(SPEC, x.astype(np.float16), w)
    assert y.dtype == np.float64


def test_reference_leaves_inputs_unmodified():
    s = SPEC.replace(layout="channels_last", dtype="float64")
    x, w = make_inputs(s)
    x0, w0 = x.copy(), w.copy()
    reference(s, x, w)
    reference(s.replace(transposed=True, c_in=4, c_out=6), make_inputs(
        s.replace(transposed=True))[0], make_inputs(s.replace(transposed=True))[1])
    assert np.array_equal(x, x0) and np.array_equal(w, w0)


def test_public_api_names():
    assert cb.reference is reference and cb.make_inputs is make_inputs
    assert cb.relative_error is relative_error and cb.tolerance is tolerance


@pytest.mark.slow
def test_reference_resnet_layer_batch8_completes():
    s = ConvSpec(n=8, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1,
                 dtype="float64")
    x, w = make_inputs(s)
    t0 = time.perf_counter()
    y = reference(s, x, w)
    elapsed = time.perf_counter() - t0
    assert y.shape == (8, 64, 56, 56) and np.all(np.isfinite(y))
    print(f"reference n=8 64->64 56x56 3x3 float64: {elapsed:.2f} s")
