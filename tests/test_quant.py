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


# ---- user-given scales: ConvSpec(quant=...), quant_params, reference, worker tasks ----------------
import json  # noqa: E402

from convbench.errors import InvalidSpecError  # noqa: E402
from convbench.quant import QuantParams  # noqa: E402

Q = cb.ConvSpec(n=2, c_in=4, c_out=3, input_size=(6, 5), kernel_size=3, padding=1, dtype="int8")
USER = (0.02, [0.004, 0.001, 0.0025], 0.05)


def test_user_scales_replace_the_default_but_not_the_identity():
    s = Q.replace(quant=USER)
    q = quant_params(s)
    assert q.x_scale == float(np.float32(0.02)) and q.y_scale == float(np.float32(0.05))
    assert q.w_scale.dtype == np.float32 and q.w_scale.tolist() == np.float32(USER[1]).tolist()
    assert quant_params(Q) != q                      # the default is something else
    # not part of the problem: equal, same key and hash (cache entries are shared)
    assert s == Q and s.key == Q.key and hash(s) == hash(Q) and Q.quant is None
    # the same scales in every accepted form
    forms = [QuantParams(0.02, np.float32(USER[1]), 0.05),
             {"x_scale": 0.02, "w_scale": USER[1], "y_scale": 0.05}, list(USER)]
    assert all(Q.replace(quant=f).quant == q for f in forms)
    # one weight scale for every channel
    assert Q.replace(quant=(1.0, 0.5, 2.0)).quant.w_scale.tolist() == [0.5, 0.5, 0.5]


def test_reference_requantises_with_the_user_scales():
    s = Q.replace(quant=USER)
    x, w = cb.make_inputs(s, seed=4)
    acc = _naive_acc(s, x, w)
    m = np.float64(np.float32(0.02)) * np.float32(USER[1]).astype(np.float64) / np.float64(np.float32(0.05))
    expect = np.clip(np.rint(acc * m[None, :, None, None]), -128, 127).astype(np.int8)
    y = cb.reference(s, x, w)
    np.testing.assert_array_equal(y, expect)
    assert np.abs(y.astype(int) - cb.reference(Q, x, w).astype(int)).max() > 1


@pytest.mark.parametrize("quant,match", [
    ((0.1, [1.0, 1.0], 0.1), r"quant\.w_scale: has shape \(2,\), but c_out is 3"),
    ((0.1, [[1.0, 1.0, 1.0]], 0.1), r"quant\.w_scale: has shape \(1, 3\)"),
    ((0.0, 1.0, 0.1), r"quant\.x_scale: 0\.0 must be positive"),
    ((0.1, 1.0, float("inf")), r"quant\.y_scale: inf must be positive and finite"),
    ((0.1, [1.0, -1.0, 1.0], 0.1), r"quant\.w_scale\[1\]: -1\.0 must be positive"),
    ((0.1, [1.0, float("nan"), 1.0], 0.1), r"quant\.w_scale\[1\]"),
    ((0.1, 1.0, 1e300), r"quant\.y_scale: .* \(as a float32"),   # overflows float32
    ((True, 1.0, 0.1), r"quant\.x_scale: True must be a positive finite number"),
    (("a", 1.0, 0.1), r"quant\.x_scale: 'a'"),
    ((0.1, ["a", "b", "c"], 0.1), r"quant\.w_scale: .* must be numbers"),
    ({"x_scale": 0.1, "w_scale": 1.0}, r"quant: \['w_scale', 'x_scale'\] must be exactly"),
    ((0.1, 1.0), r"quant: .* must be QuantParams"),
    (0.5, r"quant: 0\.5 must be QuantParams"),
])
def test_invalid_user_scales_name_the_field(quant, match):
    with pytest.raises(InvalidSpecError, match=match):
        Q.replace(quant=quant)


def test_scales_only_for_int8_and_dropped_by_a_float_override():
    with pytest.raises(InvalidSpecError, match=r"quant: scales are only for quantized problems .* float32"):
        cb.ConvSpec(n=1, c_in=4, c_out=3, input_size=(6,), kernel_size=3, quant=USER)
    s = Q.replace(quant=USER)
    assert s.replace(dtype="float32").quant is None            # e.g. `sweep --dtype float32`
    assert s.replace(n=1).quant == s.quant                     # the verification batch keeps them
    with pytest.raises(InvalidSpecError, match="quant"):
        s.replace(dtype="float32", quant=USER)


def test_scales_travel_in_the_spec_dict_and_json():
    s = Q.replace(quant=USER, name="q")
    d = json.loads(json.dumps(s.to_dict()))
    assert set(d["quant"]) == {"x_scale", "w_scale", "y_scale"}
    back = cb.ConvSpec.from_dict(d)
    assert back.quant == s.quant and back.name == "q"
    assert "quant" not in Q.to_dict()                         # older readers see what they knew
    assert "quant=QuantParams(x_scale=0.02" in repr(s)


class _UserScaleBackend(cb.Backend):
    """int8 by integer accumulation, requantised with USER's scales whatever the spec says:
    it verifies only where the reference, too, uses the user's scales."""

    name = "test-int8-user-scales"
    family = "test-int8"
    capabilities = cb.Capabilities(dtypes=frozenset({"int8"}))

    def algorithms(self, device="cpu"):
        return ["acc"] if device == "cpu" else []

    def _prepare(self, spec, x, w, algorithm, device):
        fixed = cb.ConvSpec.from_dict({**spec.to_dict(), "quant": USER})
        return _AccPrepared(fixed, x, w)


class _AccPrepared(cb.Prepared):
    def __init__(self, spec, x, w):
        self.spec, self.x, self.w, self.out = spec, x, w, None

    def run(self):
        self.out = requantize(reference_accumulators(self.spec, self.x, self.w), self.spec)

    def result(self):
        return self.out


def test_worker_task_carries_the_user_scales():
    from convbench.pool import Task
    from convbench.worker import _WorkerState

    state = _WorkerState(threads=1, family="test-int8")
    target = f"{__name__}:_UserScaleBackend"

    def verify(spec):
        task = Task(spec=spec, backend=_UserScaleBackend.name, target=target, time=False)
        return state.run(json.loads(json.dumps(task.to_dict())))   # as sent to a worker

    out = verify(Q.replace(quant=USER))
    assert out["status"] == "verified" and out["max_error"] == 0.0, out
    out = verify(Q)                                  # default scales: the backend is off
    assert out["status"] == "wrong" and out["max_error"] > 1, out
