"""int8 problems: the scales, the exact reference and the LSB error measure."""
import itertools
import math

import numpy as np
import pytest

import convbench as cb
from convbench.quant import quant_params, requantize
from convbench.reference import reference_accumulators, tolerance_for


def _naive_acc(spec, x, w):
    """Integer accumulators by plain loops over output positions (channels_first, direct)."""
    n, g = spec.n, spec.groups
    cig, cog = spec.c_in // g, spec.c_out // g
    out = np.zeros((n, spec.c_out, *spec.output_size), dtype=np.int64)
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0)] + list(spec.padding))
    for b, o in itertools.product(range(n), range(spec.c_out)):
        gi = o // cog
        for pos in itertools.product(*[range(s) for s in spec.output_size]):
            total = 0
            for c in range(cig):
                for tap in itertools.product(*[range(k) for k in spec.kernel_size]):
                    idx = tuple(p * s + t * d for p, s, t, d in zip(pos, spec.stride, tap, spec.dilation))
                    total += int(xp[(b, gi * cig + c) + idx]) * int(w[(o, c) + tap])
            out[(b, o) + pos] = total
    return out


SPECS = [
    cb.ConvSpec(n=2, c_in=4, c_out=6, input_size=(7, 6), kernel_size=3, stride=2, padding=1, dtype="int8"),
    cb.ConvSpec(n=1, c_in=6, c_out=6, input_size=(9,), kernel_size=3, dilation=2, padding=2, groups=3,
                dtype="int8"),
    cb.ConvSpec(n=1, c_in=4, c_out=4, input_size=(4, 5, 3), kernel_size=2, padding=((1, 0), (0, 1), (1, 1)),
                groups=4, dtype="int8"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_accumulators_are_exact(spec):
    x, w = cb.make_inputs(spec, seed=3)
    assert x.dtype == np.int8 and w.dtype == np.int8
    assert x.min() >= -127 and w.min() >= -127 and x.max() <= 127
    np.testing.assert_array_equal(reference_accumulators(spec, x, w), _naive_acc(spec, x, w))


def test_requantisation_by_hand():
    spec = cb.ConvSpec(n=1, c_in=1, c_out=2, input_size=(1,), kernel_size=1, dtype="int8")
    q = quant_params(spec)
    m = np.float64(q.x_scale) * q.w_scale.astype(np.float64) / np.float64(q.y_scale)
    acc = np.array([[[1000], [-1000]]])
    y = requantize(acc, spec)
    assert y.dtype == np.int8
    expect = [max(-128, min(127, round(1000 * m[0]))), max(-128, min(127, round(-1000 * m[1])))]
    assert y[0, :, 0].tolist() == expect
    # saturation
    big = np.array([[[10 ** 9], [-(10 ** 9)]]])
    assert requantize(big, spec)[0, :, 0].tolist() == [127, -128]


def test_scales_are_documented_function_of_the_spec():
    spec = SPECS[0]
    q = quant_params(spec)
    k = (spec.c_in // spec.groups) * math.prod(spec.kernel_size)
    assert q.w_scale.dtype == np.float32 and q.w_scale.shape == (spec.c_out,)
    np.testing.assert_allclose(q.w_scale, (1 / 64) / math.sqrt(k) * (1 + (np.arange(6) % 8) / 8), rtol=1e-6)
    assert quant_params(spec.replace(name="other")).y_scale == q.y_scale


def test_outputs_use_the_int8_range():
    spec = cb.ConvSpec(n=2, c_in=64, c_out=64, input_size=(14, 14), kernel_size=3, padding=1, dtype="int8")
    x, w = cb.make_inputs(spec)
    y = cb.reference(spec, x, w)
    assert y.dtype == np.int8 and y.shape == spec.output_shape
    assert 20 < y.astype(float).std() < 50
    assert np.mean(np.abs(y.astype(int)) >= 127) < 0.02


def test_channels_last_matches_channels_first():
    cf = SPECS[0]
    cl = cf.replace(layout="channels_last")
    x, w = cb.make_inputs(cf, seed=1)
    y_cf = cb.reference(cf, x, w)
    y_cl = cb.reference(cl, np.ascontiguousarray(np.moveaxis(x, 1, -1)), w)
    np.testing.assert_array_equal(np.moveaxis(y_cl, -1, 1), y_cf)


def test_error_in_lsb_and_tolerance():
    spec = SPECS[0]
    x, w = cb.make_inputs(spec)
    y = cb.reference(spec, x, w)
    assert tolerance_for(spec) == 1.0
    assert cb.output_error(y, y) == 0.0
    off = y.astype(np.int16)
    off.flat[0] += 2
    assert cb.output_error(off, y) == 2.0
    assert cb.output_error(np.full(y.shape, np.nan), y) == float("inf")


def test_int8_spec_fields():
    spec = SPECS[0]
    assert spec.itemsize == 1 and spec.dtype == "int8"
    assert "s8" in spec.label and "int8" in spec.key
    assert cb.ConvSpec(n=1, c_in=1, c_out=1, input_size=(3,), kernel_size=1, dtype="s8").dtype == "int8"
