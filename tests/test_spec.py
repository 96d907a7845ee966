"""ConvSpec: construction, validation, derived values, keys, serialisation.

Expected numbers are computed by hand (the arithmetic is written next to them), or come from
torch's own convolution shape rules.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convbench import ConvSpec, InvalidSpecError
from convbench.errors import ConvbenchError

BASE = dict(n=1, c_in=4, c_out=4, input_size=(8, 8), kernel_size=3)


@st.composite
def valid_specs(draw, dims=(1, 2, 3), transposed=None, max_size=7):
    """Random valid ConvSpecs over every option (small sizes)."""
    d = draw(st.sampled_from(dims))
    g = draw(st.integers(1, 3))
    tr = draw(st.booleans()) if transposed is None else transposed
    ks, ss, ds, ps, ins, ops = [], [], [], [], [], []
    for _ in range(d):
        k, s, dl = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        pb, pa = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        ek = dl * (k - 1) + 1
        if tr:
            i = draw(st.integers(1, max_size))
            op = draw(st.integers(0, max(s, dl) - 1))
            assume((i - 1) * s + ek + op - pb - pa >= 1)
        else:
            lo = max(1, ek - pb - pa)
            i = draw(st.integers(lo, lo + max_size))
            op = 0
        ks.append(k), ss.append(s), ds.append(dl), ps.append((pb, pa)), ins.append(i), ops.append(op)
    return ConvSpec(
        n=draw(st.integers(1, 3)), c_in=g * draw(st.integers(1, 3)), c_out=g * draw(st.integers(1, 3)),
        input_size=tuple(ins), kernel_size=tuple(ks), stride=tuple(ss), padding=tuple(ps),
        dilation=tuple(ds), groups=g, transposed=tr, output_padding=tuple(ops),
        dtype=draw(st.sampled_from(["float64", "float32", "float16", "bfloat16"])),
        layout=draw(st.sampled_from(["channels_first", "channels_last"])),
        name=draw(st.sampled_from(["", "layer1", 'odd "name" x'])))


# ---- construction ------------------------------------------------------------------------------

def test_scalars_broadcast_and_fields_normalised():
    s = ConvSpec(n=2, c_in=3, c_out=8, input_size=[10, 12, 14], kernel_size=3, stride=2,
                 padding=1, dilation=1, dtype="fp16", layout="NDHWC")
    assert s.dims == 3
    assert s.input_size == (10, 12, 14)
    assert s.kernel_size == (3, 3, 3) and s.stride == (2, 2, 2) and s.dilation == (1, 1, 1)
    assert s.padding == ((1, 1), (1, 1), (1, 1))
    assert s.output_padding == (0, 0, 0)
    assert s.dtype == "float16" and s.layout == "channels_last"
    assert s.symmetric_padding


@pytest.mark.parametrize("alias,canonical", [
    ("f32", "float32"), ("float", "float32"), ("double", "float64"), ("bf16", "bfloat16"),
    ("half", "float16"), (np.float32, "float32"), (np.dtype("float64"), "float64")])
def test_dtype_aliases(alias, canonical):
    assert ConvSpec(**BASE, dtype=alias).dtype == canonical


def test_padding_forms():
    assert ConvSpec(**BASE, padding=(1, 2)).padding == ((1, 1), (2, 2))
    assert ConvSpec(**BASE, padding=((0, 1), (2, 3))).padding == ((0, 1), (2, 3))
    assert ConvSpec(**BASE, padding=[(0, 1), 2]).padding == ((0, 1), (2, 2))
    assert not ConvSpec(**BASE, padding=((0, 1), (2, 3))).symmetric_padding


def test_depthwise_flag():
    assert ConvSpec(n=1, c_in=8, c_out=8, input_size=(5,), kernel_size=3, groups=8).depthwise
    assert not ConvSpec(n=1, c_in=8, c_out=8, input_size=(5,), kernel_size=3, groups=4).depthwise
    assert not ConvSpec(n=1, c_in=8, c_out=8, input_size=(5,), kernel_size=3).depthwise


# ---- derived values, by hand -----------------------------------------------------------------

@pytest.mark.parametrize("kw,expected", [
    # floor((i + pb + pa - (d*(k-1)+1)) / s) + 1
    (dict(input_size=(10,), kernel_size=3), (8,)),                          # 10-3+1
    (dict(input_size=(10,), kernel_size=3, padding=1), (10,)),              # 12-3+1
    (dict(input_size=(10,), kernel_size=3, stride=2), (4,)),                # (10-3)//2+1
    (dict(input_size=(10,), kernel_size=3, stride=2, padding=1), (5,)),     # (12-3)//2+1
    (dict(input_size=(10,), kernel_size=3, dilation=2), (6,)),              # ek=5: 10-5+1
    (dict(input_size=(10,), kernel_size=3, stride=2, padding=1, dilation=2), (4,)),  # (12-5)//2+1
    (dict(input_size=(10,), kernel_size=3, padding=((0, 2),)), (10,)),      # 12-3+1
    (dict(input_size=(224, 224), kernel_size=7, stride=2, padding=3), (112, 112)),   # (230-7)//2+1
    (dict(input_size=(5, 6, 7), kernel_size=(1, 2, 3), stride=(1, 2, 3)), (5, 3, 2)),
    # transposed: (i-1)*s + d*(k-1)+1 + op - pb - pa
    (dict(input_size=(4,), kernel_size=3, transposed=True), (6,)),          # 3+3
    (dict(input_size=(4,), kernel_size=3, stride=2, transposed=True), (9,)),  # 6+3
    (dict(input_size=(4,), kernel_size=3, stride=2, padding=1, output_padding=1,
          transposed=True), (8,)),                                          # 6+3+1-2
    (dict(input_size=(28, 28), kernel_size=3, stride=2, padding=1, output_padding=1,
          transposed=True), (56, 56)),                                      # 54+3+1-2
    (dict(input_size=(4,), kernel_size=3, dilation=3, padding=((2, 1),), transposed=True),
     (7,)),                                                                 # 3+7-3
])
def test_output_size_hand_computed(kw, expected):
    s = ConvSpec(n=1, c_in=2, c_out=2, **kw)
    assert s.output_size == expected
    assert s.output_shape == (1, 2, *expected)


def test_shapes_in_both_layouts():
    cf = ConvSpec(n=3, c_in=4, c_out=6, input_size=(9, 7), kernel_size=(3, 1), groups=2)
    cl = cf.replace(layout="channels_last")
    assert cf.input_shape == (3, 4, 9, 7) and cl.input_shape == (3, 9, 7, 4)
    assert cf.output_shape == (3, 6, 7, 7) and cl.output_shape == (3, 7, 7, 6)
    assert cf.weight_shape == cl.weight_shape == (6, 2, 3, 1)          # (C_out, C_in/g, *k)
    t = cf.replace(transposed=True)
    assert t.weight_shape == (4, 3, 3, 1)                              # (C_in, C_out/g, *k)
    assert t.output_shape == (3, 6, 11, 7)                             # 8+3, 6+1


def test_flops_and_bytes_resnet_layer():
    s = ConvSpec(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1)
    # 2 * N * C_out * C_in/g * kh*kw * oh*ow = 2 * 64 * 64 * 9 * 3136
    assert s.flops == 231_211_008
    # float32: (64*56*56 in + 64*64*9 weights + 64*56*56 out) * 4 = (200704+36864+200704)*4
    assert s.bytes == 1_753_088
    assert s.arithmetic_intensity == pytest.approx(231_211_008 / 1_753_088)
    assert s.replace(dtype="bfloat16").bytes == 876_544
    assert s.replace(dtype="float64").bytes == 3_506_176


def test_flops_grouped_and_depthwise():
    g = ConvSpec(n=2, c_in=8, c_out=4, input_size=(10,), kernel_size=3, groups=2)
    assert g.flops == 2 * 2 * 4 * 4 * 3 * 8 == 1536          # C_in/g = 4, ow = 8
    dw = ConvSpec(n=1, c_in=32, c_out=32, input_size=(14, 14), kernel_size=3, padding=1, groups=32)
    assert dw.flops == 2 * 32 * 1 * 9 * 196 == 112_896
    # bytes: (32*196 + 32*1*9 + 32*196) * 4
    assert dw.bytes == (6272 + 288 + 6272) * 4


def test_flops_transposed_equals_equivalent_direct():
    t = ConvSpec(n=1, c_in=4, c_out=6, input_size=(5,), kernel_size=3, stride=2, padding=1,
                 output_padding=1, groups=2, transposed=True)
    assert t.output_size == (10,)                             # 4*2 + 3 + 1 - 2
    assert t.flops == 2 * 1 * 4 * 3 * 3 * 5 == 360            # 2*N*C_in*(C_out/g)*k*i
    direct = ConvSpec(n=1, c_in=6, c_out=4, input_size=(10,), kernel_size=3, stride=2,
                      padding=1, groups=2)
    assert direct.output_size == (5,)
    assert direct.flops == t.flops
    # bytes: (4*5 input + 4*3*3 weights + 6*10 output) * 4
    assert t.bytes == (20 + 36 + 60) * 4


# ---- validation ---------------------------------------------------------------------------------

BAD = [
    (dict(n=0), "n", "0"),
    (dict(n=-1), "n", "-1"),
    (dict(n=1.5), "n", "1.5"),
    (dict(n=True), "n", "True"),
    (dict(c_in=0), "c_in", "0"),
    (dict(c_out=0), "c_out", "0"),
    (dict(c_out="8"), "c_out", "'8'"),
    (dict(input_size=56), "input_size", "56"),
    (dict(input_size=()), "input_size", "()"),
    (dict(input_size=(4, 4, 4, 4)), "input_size", "(4, 4, 4, 4)"),
    (dict(input_size=(0, 8)), "input_size[0]", "0"),
    (dict(input_size=(8, "a")), "input_size[1]", "'a'"),
    (dict(kernel_size=0), "kernel_size", "0"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size", "(3, 3, 3)"),
    (dict(input_size=(2, 8)), "kernel_size[0]", "3"),                     # kernel > input
    (dict(input_size=(8, 8), dilation=(4, 1)), "kernel_size[0]", "9"),   # dilated: 4*2+1
    (dict(stride=0), "stride", "0"),
    (dict(stride=(1,)), "stride", "(1,)"),
    (dict(dilation=0), "dilation", "0"),
    (dict(dilation=(1, 1.0)), "dilation[1]", "1.0"),
    (dict(padding=-1), "padding", "-1"),
    (dict(padding="full"), "padding", "'full'"),
    (dict(padding=(1, 1, 1)), "padding", "(1, 1, 1)"),
    (dict(padding=((1, 2, 3), 0)), "padding[0]", "(1, 2, 3)"),
    (dict(padding=((-1, 0), 0)), "padding[0][0]", "-1"),
    (dict(groups=0), "groups", "0"),
    (dict(groups=3), "groups", "c_in=4"),
    (dict(c_in=4, c_out=6, groups=4), "groups", "c_out=6"),
    (dict(output_padding=1), "output_padding", "transposed"),
    (dict(output_padding=2, stride=2, transposed=True), "output_padding[0]", "2"),
    (dict(output_padding=1, transposed=True), "output_padding[0]", "1"),   # stride 1, dil 1
    (dict(transposed="yes"), "transposed", "'yes'"),
    (dict(dtype="int4"), "dtype", "'int4'"),
    (dict(dtype="tf32"), "dtype", "'tf32'"),
    (dict(layout="nchw16c"), "layout", "'nchw16c'"),
    (dict(padding="same", transposed=True), "padding", "same"),
    (dict(padding="same", stride=2), "padding", "stride[0]=2"),       # total (4-1)*2+3-8=1
    (dict(input_size=(1, 1), kernel_size=1, padding=1, transposed=True), "padding[0]", "(1, 1)"),
    (dict(name=5), "name", "5"),
]


@pytest.mark.parametrize("changes,fieldname,value", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_invalid_spec_error_naming_the_field(changes, fieldname, value):
    kw = {**BASE, **changes}
    with pytest.raises(InvalidSpecError) as info:
        ConvSpec(**kw)
    msg = str(info.value)
    assert fieldname in msg, msg
    assert value in msg, msg
    assert isinstance(info.value, ConvbenchError) and isinstance(info.value, ValueError)


def test_bad_inputs_are_distinct():
    seen = {json.dumps(c, sort_keys=True, default=repr) for c, _, _ in BAD}
    assert len(seen) == len(BAD) >= 25


def test_from_dict_rejects_unknown_and_missing_fields():
    d = ConvSpec(**BASE).to_dict()
    with pytest.raises(InvalidSpecError, match="bogus"):
        ConvSpec.from_dict({**d, "bogus": 1})
    del d["kernel_size"]
    with pytest.raises(InvalidSpecError, match="kernel_size"):
        ConvSpec.from_dict(d)
    with pytest.raises(InvalidSpecError, match="list"):
        ConvSpec.from_dict([1, 2])


# ---- same / valid -----------------------------------------------------------------------------

@pytest.mark.parametrize("i,k,d", [(10, 3, 1), (10, 4, 1), (9, 2, 1), (10, 3, 2), (7, 5, 3), (1, 3, 1)])
def test_same_padding_stride1_keeps_size(i, k, d):
    s = ConvSpec(n=1, c_in=1, c_out=1, input_size=(i,), kernel_size=k, dilation=d, padding="same")
    assert s.output_size == (i,)
    (pb, pa), = s.padding
    assert pb + pa == d * (k - 1)          # total padding = dilated extent - 1
    assert pa - pb in (0, 1)               # extra element after, as TF and torch do


def test_same_padding_stride2():
    ok = ConvSpec(n=1, c_in=1, c_out=1, input_size=(9,), kernel_size=3, stride=2, padding="same")
    assert ok.output_size == (5,)          # ceil(9/2)
    assert ok.padding == ((1, 1),)         # (5-1)*2 + 3 - 9 = 2
    with pytest.raises(InvalidSpecError, match="padding"):
        ConvSpec(n=1, c_in=1, c_out=1, input_size=(8,), kernel_size=3, stride=2, padding="same")


def test_valid_padding_is_zero():
    s = ConvSpec(n=1, c_in=1, c_out=1, input_size=(9, 9), kernel_size=4, padding="valid")
    assert s.padding == ((0, 0), (0, 0)) and s.output_size == (6, 6)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("k,d", [(3, 1), (4, 1), (2, 3), (5, 2)])
def test_same_padding_matches_torch(dims, k, d):
    torch = pytest.importorskip("torch", reason="torch not installed: cannot compare with padding='same'")
    F = torch.nn.functional
    size = (7, 6, 5)[:dims]
    s = ConvSpec(n=1, c_in=2, c_out=3, input_size=size, kernel_size=k, dilation=d, padding="same")
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    x = torch.zeros((1, 2, *size), dtype=torch.float64)
    w = torch.zeros((3, 2, *[k] * dims), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: even kernels need a padded copy
        assert tuple(conv(x, w, padding="same", dilation=d).shape) == s.output_shape
        same = conv(x2 := torch.randn((1, 2, *size), dtype=torch.float64),
                    w2 := torch.randn((3, 2, *[k] * dims), dtype=torch.float64),
                    padding="same", dilation=d)
    # the split of the padding matches torch's (extra element after): compare values
    pads = [p for pair in reversed(s.padding) for p in pair]
    torch.testing.assert_close(conv(F.pad(x2, pads), w2, dilation=d), same)


# ---- keys, equality, hashing ----------------------------------------------------------------------

def test_equal_specs_have_equal_keys_and_hashes_name_ignored():
    a = ConvSpec(n=1, c_in=4, c_out=8, input_size=(9, 9), kernel_size=3, padding=1, name="stem_a")
    b = ConvSpec(n=1, c_in=4, c_out=8, input_size=[9, 9], kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                 stride=(1, 1), dtype="f32", layout="nchw", name="stem_b")
    assert a == b and a.key == b.key and hash(a) == hash(b)
    assert "stem" not in a.key and "stem" not in b.key
    assert len({a, b}) == 1
    assert a.label.startswith("stem_a: ") and b.label.startswith("stem_b: ")


@pytest.mark.parametrize("change", [
    dict(n=2), dict(c_in=8), dict(c_out=4), dict(input_size=(9, 10)), dict(kernel_size=(3, 1)),
    dict(stride=2), dict(padding=((1, 1), (1, 0))), dict(padding=((0, 1), (1, 1))), dict(padding=0),
    dict(dilation=2), dict(groups=4), dict(transposed=True), dict(dtype="float64"),
    dict(layout="channels_last"), dict(transposed=True, output_padding=(0, 1), stride=2)])
def test_any_field_change_changes_the_key(change):
    a = ConvSpec(n=1, c_in=4, c_out=8, input_size=(9, 9), kernel_size=3, padding=1)
    b = a.replace(**change)
    assert a != b and a.key != b.key


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs(), valid_specs())
def test_keys_unique_iff_specs_equal(a, b):
    assert (a == b) == (a.key == b.key)
    if a == b:
        assert hash(a) == hash(b)


def test_key_is_stable_across_processes():
    s = ConvSpec(n=2, c_in=6, c_out=4, input_size=(7, 5), kernel_size=(3, 2), stride=(2, 1),
                 padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2, dtype="bf16",
                 layout="channels_last")
    code = ("from convbench import ConvSpec; import json, sys; "
            "print(ConvSpec.from_dict(json.loads(sys.argv[1])).key)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(s.to_dict())],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == s.key


# ---- serialisation ----------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(valid_specs())
def test_to_dict_from_dict_round_trip_through_json(spec):
    d = json.loads(json.dumps(spec.to_dict()))
    back = ConvSpec.from_dict(d)
    assert back == spec and back.name == spec.name and back.key == spec.key
    assert ConvSpec(**spec.to_dict()) == spec
    assert eval(repr(spec), {"ConvSpec": ConvSpec}) == spec  # repr is a valid constructor call


def test_replace_revalidates():
    s = ConvSpec(**BASE)
    assert s.replace(stride=2).stride == (2, 2)
    with pytest.raises(InvalidSpecError, match="groups"):
        s.replace(groups=3)


# ---- shapes agree with torch ------------------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_output_shape_matches_torch(spec):
    torch = pytest.importorskip("torch", reason="torch not installed: cannot compare output shapes")
    F = torch.nn.functional
    d = spec.dims
    x = torch.empty((spec.n, spec.c_in, *spec.input_size), device="meta")
    w = torch.empty(spec.weight_shape, device="meta")
    if not spec.transposed:
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        pads = [p for pair in reversed(spec.padding) for p in pair]
        y = conv(F.pad(x, pads), w, stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
        expected = tuple(y.shape)
    else:
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1]
        y = conv(x, w, stride=spec.stride, dilation=spec.dilation, groups=spec.groups,
                 output_padding=spec.output_padding)
        # torch pads symmetrically only: asymmetric padding crops (pb, pa) from the unpadded output
        expected = (*y.shape[:2], *[o - pb - pa for o, (pb, pa) in zip(y.shape[2:], spec.padding)])
        if spec.symmetric_padding:
            y2 = conv(x, w, stride=spec.stride, dilation=spec.dilation, groups=spec.groups,
                      output_padding=spec.output_padding, padding=[p for p, _ in spec.padding])
            assert tuple(y2.shape) == expected
    cf = spec.replace(layout="channels_first")
    assert cf.output_shape == expected
