"""benchdnn descriptors and batch files (convbench.benchdnn).

Descriptors below are copied from oneDNN's own benchdnn inputs (source named at each excerpt);
expected values are worked out by hand from oneDNN's documented rules
(tests/benchdnn/conv/conv_aux.cpp, str2desc: mb=2 default, dilation from 0, output computed
from padding, padding deduced from output, pad_r = (o-1)*s - i + ek - pad_l).
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import convbench as cb
from convbench import ConvSpec, InvalidSpecError, SuiteError
from convbench.benchdnn import (BenchdnnWarning, cfg_to_dtype, format_descriptor,
                                parse_batch_text, parse_descriptor, read_batch_file)
from test_spec import valid_specs

# Excerpt of tests/benchdnn/inputs/conv/shapes_resnet_50 (oneDNN; read from the
# aayejinpeng/oneDNN mirror, commit 09498421), lines 1-9 and 13-15.
RESNET_50_EXCERPT = '''# resnet_50

g1mb1ic3ih224iw224oc64oh112ow112kh7kw7sh2sw2ph3pw3n"resnet_50:conv1"
mb1ic64ih56oc256oh56kh1ph0n"resnet_50:res2a_branch1*4"
mb1ic64ih56oc64oh56kh1ph0n"resnet_50:res2a_branch2a"
mb1ic64ih56oc64oh56kh3ph1n"resnet_50:res2a_branch2b*3"
# mb1ic64ih56oc256oh56kh1ph0n"resnet_50:res2a_branch2c"        # res2a_branch1
mb1ic256ih56oc64oh56kh1ph0n"resnet_50:res2b_branch2a*2"
# mb1ic64ih56oc64oh56kh3ph1n"resnet_50:res2b_branch2b"         # res2a_branch2b
g1mb1ic256ih56iw56oc512oh28ow28kh1kw1sh2sw2ph0pw0n"resnet_50:res3a_branch1"
g1mb1ic256ih56iw56oc128oh28ow28kh1kw1sh2sw2ph0pw0n"resnet_50:res3a_branch2a"
mb1ic128ih28oc128oh28kh3ph1n"resnet_50:res3a_branch2b*4"
'''

# oneDNN tests/benchdnn/inputs/conv/shapes_dilated_1d_1st_strided_padding (commit 312be62f):
# entries whose names carry oneDNN's own right padding, "pw-right(X)" (none given: X = 0).
DILATED_STRIDED_EXCERPT = [
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw1_od1oh1ow1_sd1sh1sw2_pd0ph0pw1_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_1_pw-right(7)"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw4_od1oh1ow1_sd1sh1sw3_pd0ph0pw2_dd0dh0dw5n'
     '"dilated_1d_1st_strided_padding_32_pw-right(7)"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw11_od1oh1ow2_sd1sh1sw2_pd0ph0pw1_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_33_pw-right(-1)"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw11_od1oh1ow1_sd1sh1sw2_pd0ph0pw1_dd0dh0dw5n'
     '"dilated_1d_1st_strided_padding_34_pw-right(1)"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw11_od1oh1ow3_sd1sh1sw2_pd0ph0pw2_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_35"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw13_od1oh1ow2_sd1sh1sw3_pd0ph0pw1_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_45_pw-right(-2)"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw31_od1oh1ow9_sd1sh1sw3_pd0ph0pw2_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_55"'),
    ('mb1_ic1oc16_kd1kh1kw3_id1ih1iw111_od1oh1ow35_sd1sh1sw3_pd0ph0pw2_dd0dh0dw3n'
     '"dilated_1d_1st_strided_padding_87_pw-right(-2)"'),
]

# oneDNN tests/benchdnn/inputs/deconv/deconv_2d (commit 910db567), three entries.
DECONV_EXCERPT = [
    'g1mb256oc3oh227ow227ic96ih55iw55kh11kw11sh4sw4ph0pw0n"alexnet:deconv1"',
    'mb1_g1oc3ic64_oh1030ih512kh7sh2dh0ph0_ow1030iw512kw7sw2dw0pw0_n"masknet_p1:deconv1"',
    'ic8ih1iw5oc8oh1ow2kh1kw3ph0pw3dh0dw2n"deconv1d:1"',
]


# ---- oneDNN's own descriptors -------------------------------------------------------------------

def test_design_example():
    s = ConvSpec.from_benchdnn('mb1ic64ih56oc64kh3ph1n"res2a"')
    assert s == ConvSpec(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1)
    assert s.name == "res2a" and s.output_size == (56, 56)


def test_resnet50_excerpt():
    specs = parse_batch_text(RESNET_50_EXCERPT, "shapes_resnet_50")
    assert [s.name for s in specs] == [
        "resnet_50:conv1", "resnet_50:res2a_branch1*4", "resnet_50:res2a_branch2a",
        "resnet_50:res2a_branch2b*3", "resnet_50:res2b_branch2a*2", "resnet_50:res3a_branch1",
        "resnet_50:res3a_branch2a", "resnet_50:res3a_branch2b*4"]
    conv1, b1, _, b2b, _, r3b1, _, r3b2b = specs
    assert conv1 == ConvSpec(n=1, c_in=3, c_out=64, input_size=(224, 224), kernel_size=7,
                             stride=2, padding=3)
    assert conv1.output_size == (112, 112)
    assert b1 == ConvSpec(n=1, c_in=64, c_out=256, input_size=(56, 56), kernel_size=1)
    assert b2b == ConvSpec(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1)
    # 1x1 stride 2 on 56 -> 28: oneDNN's pad_r = 27*2 - 56 + 1 - 0 = -1 (last row unread);
    # the same convolution without that crop is plain padding 0
    assert r3b1 == ConvSpec(n=1, c_in=256, c_out=512, input_size=(56, 56), kernel_size=1,
                            stride=2, padding=0)
    assert r3b2b.input_size == (28, 28) and r3b2b.padding == ((1, 1), (1, 1))
    assert all(s.dtype == "float32" and s.layout == "channels_first" for s in specs)


@pytest.mark.parametrize("desc", DILATED_STRIDED_EXCERPT)
def test_onednn_right_padding_annotations(desc):
    s = parse_descriptor(desc)
    x = int(m.group(1)) if (m := re.search(r"pw-right\((-?\d+)\)", desc)) else 0
    ow = int(re.search(r"_od1oh1ow(\d+)_", desc).group(1))
    sw = s.stride[2]
    assert s.dims == 3 and s.input_size[:2] == (1, 1) and s.output_size[2] == ow
    pl, pr = s.padding[2]
    assert pl == int(re.search(r"pw(\d+)_", desc).group(1))
    # oneDNN's pad_r X may be negative (down to 1 - stride: rows never read); every right
    # padding in [max(X, 0), X + stride - 1] gives the same convolution
    assert max(x, 0) <= pr <= x + sw - 1
    if x >= 0 and not (x <= pl <= x + sw - 1):
        assert pr == x


def _onednn_conv1d(x, w, o, s, pl, dil):
    """oneDNN's reference loop (ref_conv.cpp): iw = ow*SW - PW + kw*(DW+1), zero outside."""
    n, c, i = x.shape
    y = np.zeros((n, w.shape[0], o))
    for ow in range(o):
        for kw in range(w.shape[2]):
            iw = ow * s - pl + kw * dil
            if 0 <= iw < i:
                y[:, :, ow] += np.einsum("nc,oc->no", x[:, :, iw], w[:, :, kw])
    return y


def _onednn_deconv1d(x, w, o, s, pl, dil):
    """Deconv as oneDNN defines it (backward data of the conv with src/dst swapped)."""
    n, c, i = x.shape
    y = np.zeros((n, w.shape[1], o))
    for iw in range(i):
        for kw in range(w.shape[2]):
            ow = iw * s - pl + kw * dil
            if 0 <= ow < o:
                y[:, :, ow] += np.einsum("nc,co->no", x[:, :, iw], w[:, :, kw])
    return y


@pytest.mark.parametrize("desc", [
    "mb2ic3oc2_iw11ow2kw3sw2pw1dw3",     # pad_r -1
    "mb2ic3oc2_iw13ow2kw3sw3pw1dw3",     # pad_r -2
    "mb2ic3oc2_iw9ow5kw3sw2",            # padding deduced: ((5-1)*2 - 9 + 3)/2 = 1
    "mb2ic3oc2_iw7ow7kw2",               # deduced pad 0, pad_r 1 (asymmetric)
    "mb2ic3oc2_iw5ow6kw3pw1",            # pad_r 2
    "mb2ic3oc2_iw10kw3sw3pw2dw1",        # output computed: (10 + 4 - 5)//3 + 1 = 4
])
def test_descriptor_means_what_onednn_computes(desc):
    s = parse_descriptor(desc, dtype="float64")
    x, w = cb.make_inputs(s, seed=3)
    o = s.output_size[0]
    if m := re.search(r"ow(\d+)", desc):
        assert o == int(m.group(1))
    expected = _onednn_conv1d(x, w, o, s.stride[0], s.padding[0][0], s.dilation[0])
    np.testing.assert_allclose(cb.reference(s, x, w), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("desc", [
    "mb2ic3oc2_iw5ow12kw3sw2pw0",        # full 11, pad_r = 4*2 - 12 + 3 - 0 = -1 -> output_padding 1
    "mb2ic3oc2_iw5ow10kw3sw2pw1",        # pad_r = 0 -> symmetric 1 with output_padding 1
    "mb2ic3oc2_iw4ow5kw3sw1",            # deduced pad (3 - 5 + 3)/2 = 0, pad_r 1
    "mb2ic3oc2_iw4kw3sw2pw1dw1",         # output computed: 3*2 + 5 - 2 = 9
    "ic3oc2iw5ow2kw3dw2pw3",             # from deconv1d:1 (pad_r = 6)
])
def test_deconv_descriptor_means_what_onednn_computes(desc):
    s = parse_descriptor(desc, transposed=True, dtype="float64")
    x, w = cb.make_inputs(s, seed=4)
    o = s.output_size[0]
    if m := re.search(r"ow(\d+)", desc):
        assert o == int(m.group(1))
    expected = _onednn_deconv1d(x, w, o, s.stride[0], s.padding[0][0], s.dilation[0])
    np.testing.assert_allclose(cb.reference(s, x, w), expected, rtol=1e-12, atol=1e-12)


def test_deconv_excerpt():
    a, m, d1 = (parse_descriptor(d, transposed=True) for d in DECONV_EXCERPT)
    # alexnet: (55-1)*4 + 11 = 227, no padding
    assert a == ConvSpec(n=256, c_in=96, c_out=3, input_size=(55, 55), kernel_size=11, stride=4,
                         transposed=True)
    # masknet: full (512-1)*2 + 7 = 1029, oh1030 -> oneDNN pad_r -1 = output_padding 1
    assert m == ConvSpec(n=1, c_in=64, c_out=3, input_size=(512, 512), kernel_size=7, stride=2,
                         transposed=True, output_padding=1)
    assert m.output_size == (1030, 1030)
    # 2D with ih1: w: full (5-1) + 3*2+1 = 11, pw3, ow2 -> pad_r = 11 - 2 - 3 = 6
    assert d1 == ConvSpec(n=2, c_in=8, c_out=8, input_size=(1, 5), kernel_size=(1, 3),
                          dilation=(1, 3), padding=((0, 0), (3, 6)), transposed=True)


def test_deconv_pytorch_style_output_padding():
    s = parse_descriptor("mb1ic8ih28oc4oh56kh3sh2ph1", transposed=True)
    assert s.padding == ((1, 1), (1, 1)) and s.output_padding == (1, 1)
    assert s.output_size == (56, 56)


# ---- defaults and dims rules -------------------------------------------------------------------

def test_defaults():
    s = parse_descriptor("ic3oc5ih9kh3")
    assert s.n == 2                                   # mb defaults to 2
    assert s.stride == (1, 1) and s.dilation == (1, 1) and s.groups == 1
    assert s.padding == ((0, 0), (0, 0)) and s.output_size == (7, 7)
    assert s.name == "" and not s.transposed
    assert s.dtype == "float32" and s.layout == "channels_first"


def test_dilation_counts_from_zero():
    assert parse_descriptor("ic1oc1iw9kw3dw0").dilation == (1,)
    s = parse_descriptor("ic1oc1iw9kw3dw2")
    assert s.dilation == (3,) and s.output_size == (3,)   # ek = 3*2+1 = 7: 9-7+1


def test_only_w_is_1d():
    s = parse_descriptor("ic4oc8iw20kw5sw2pw2")
    assert s.dims == 1 and s.input_size == (20,) and s.output_size == (10,)  # (24-5)//2+1


def test_h_without_w_copies_h_to_w():
    s = parse_descriptor("ic4oc8ih20oh10kh5sh2ph2dh1")
    assert s.dims == 2
    assert s.input_size == (20, 20) and s.kernel_size == (5, 5) and s.stride == (2, 2)
    assert s.dilation == (2, 2) and s.output_size == (10, 10)
    # ek = 2*4+1 = 9; oh10 needs pad_r = 9*2 - 20 + 9 - 2 = 5: (20 + 2 + 5 - 9)//2 + 1 = 10
    assert s.padding == ((2, 5), (2, 5))


def test_d_only_is_cubic():
    s = parse_descriptor("ic4oc8id6kd3pd1sd2")
    assert s.dims == 3
    assert s.input_size == (6, 6, 6) and s.kernel_size == (3, 3, 3)
    assert s.stride == (2, 2, 2) and s.padding == ((1, 1),) * 3
    assert s.output_size == (3, 3, 3)                   # (8-3)//2+1


def test_3d_all_given():
    s = parse_descriptor("g2mb3ic4id5ih6iw7oc6kd1kh2kw3")
    assert s.input_size == (5, 6, 7) and s.kernel_size == (1, 2, 3) and s.output_size == (5, 5, 5)
    assert s.groups == 2 and s.n == 3


def test_groups_and_depthwise():
    s = parse_descriptor('g128ic128iw16oc128ow16kw3sw1pw1n"conv_dw"')   # oneDNN shapes_1d
    assert s.depthwise and s.groups == 128 and s.output_size == (16,)


def test_underscores_and_key_order_do_not_matter():
    a = parse_descriptor("mb1_ic64oc64_ih56oh56kh3sh1ph1")
    b = parse_descriptor("ph1kh3oc64ih56mb1ic64")
    assert a == b == ConvSpec(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1)


def test_repeated_key_with_same_value_is_accepted():
    # oneDNN's shapes_regression_padding writes kh twice
    s = parse_descriptor("mb1ic16oc16_ih10kh5_kh5ph7sh1")
    assert s.kernel_size == (5, 5) and s.padding == ((7, 7), (7, 7)) and s.output_size == (20, 20)


@pytest.mark.parametrize("desc,name", [
    ('ic1oc1iw3kw1n"a:b c"', "a:b c"), ("ic1oc1iw3kw1nplain", "plain"),
    ('ic1oc1iw3kw1_n"x"', "x"), ("ic1oc1iw3kw1n'q'", "q"), ('ic1oc1iw3kw1n"in"ner"', 'in"ner'),
    ("ic1oc1iw3kw1n", "")])
def test_names(desc, name):
    assert parse_descriptor(desc).name == name


def test_overrides():
    s = parse_descriptor("mb1ic4oc4ih8kh3", dtype="bf16", layout="channels_last", n=7, name="z")
    assert (s.dtype, s.layout, s.n, s.name) == ("bfloat16", "channels_last", 7, "z")
    s2 = ConvSpec.from_benchdnn("mb1ic4oc4ih8kh3", dtype="float16")
    assert s2.dtype == "float16"


# ---- padding deduction and asymmetric padding --------------------------------------------------

@pytest.mark.parametrize("desc,padding,out", [
    ("ic1oc1iw56ow56kw3", (1, 1), 56),          # ((56-1) - 56 + 3)/2 = 1, pad_r 1
    ("ic1oc1iw56ow28kw3sw2", (0, 1), 28),       # (54 - 56 + 3)/2 = 0, pad_r 1 (TF 'SAME')
    ("ic1oc1iw224ow112kw7sw2", (2, 3), 112),    # (222 - 224 + 7)/2 = 2, pad_r 3
    ("ic1oc1iw7ow7kw2", (0, 1), 7),             # (6 - 7 + 2)/2 = 0, pad_r 1
    ("ic1oc1iw5ow6kw3pw1", (1, 2), 6),          # pad_r = 5 - 5 + 3 - 1 = 2
    ("ic1oc1iw56ow28kw1sw2", (0, 0), 28),       # (54-56+1)/2 -> 0 (C rounds to 0), pad_r -1
    ("ic1oc1iw224ow112kw7sw2pw3", (3, 3), 112), # pad_r 2, but symmetric 3 gives the same output
    ("ic1oc1iw56ow28kw3sw2pw1rw0", (1, 0), 28), # convbench extension: explicit right padding
    ("ic1oc1iw6kw3pw1rw2", (1, 2), 7),          # ... also without an output size
])
def test_padding_deduction(desc, padding, out):
    s = parse_descriptor(desc)
    assert s.padding == (padding,) and s.output_size == (out,)


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("desc,fragment", [
    ("", "empty"),
    ("   ", "empty"),
    ("mb1ic64ih56oc64kh3xx4", "'xx4'"),
    ("IC4oc4ih5kh3", "'IC4oc4ih5kh3'"),
    ("ic4oc4ih5kh3 ph1", "' ph1'"),
    ("ic64ih56oc64kh3ph", "'ph'"),
    ("ic64ihoc64kh3", "'ih'"),
    ("ic4oc4ih5kh3sh-1", "sh-1"),
    ("ih56oc64kh3", "ic is missing"),
    ("ic64ih56kh3", "oc is missing"),
    ("ic0oc4ih5kh3", "ic is 0"),
    ("ic4oc4ih5", "kh is missing"),
    ("ic4oc4kh3", "ih is missing"),
    ("ic4oc4ih0kh3", "ih is 0"),
    ("ic4oc4ih5kh3sh0", "sh0"),
    ("g0ic4oc4ih5kh3", "g0"),
    ("mb0ic4oc4ih5kh3", "mb0"),
    ("ic4oc4ih5kh3ih6", "ih is given twice"),
    ("ic4oc4ih10oh2kh3", "oh2"),                # would need negative left padding
    ("ic4oc4ih10oh2kh3ph0", "oh2"),             # pad_r -6: more than stride-1 rows cropped
    ("ic4oc4ih2kh5", "kh5"),                    # kernel larger than input
    ("ic4oc4iw5kw3dw2", "kw3"),                 # dilated kernel (7) larger than input
    ("g4ic6oc4ih5kh3", "groups"),
    ("ic4oc4id5ih5kd3kh3", "h but no w"),
    ("ic4oc4id5iw5kd3kw3", "w but no h"),
    ("ic4oc4", "no spatial dimension"),
    ("ic4oc4mb2", "no spatial dimension"),
    ("ic4oc4ih5kh3ph1rh5oh6", "rh5"),           # explicit right padding contradicts oh
])
def test_malformed_descriptors(desc, fragment):
    with pytest.raises(InvalidSpecError) as info:
        parse_descriptor(desc)
    assert fragment in str(info.value), str(info.value)
    if desc.strip():
        assert repr(desc.strip()) in str(info.value)       # names the whole descriptor too


@pytest.mark.parametrize("desc,fragment", [
    ("ic4oc4ih5oh20kh3", "oh20"),       # larger than the full output (4+3=7): negative padding
    ("ic4oc4ih5oh20kh3ph0", "oh20"),    # needs output_padding 13 >= max(stride, dilation)
    ("ic4oc4ih1kh1ph1", "crops"),       # output 1 - 2 < 1
    ("ic4oc4ih5oh6kh3ph1rh2", "rh2"),   # explicit right padding contradicts oh
    ("ic4oc4iw1ow2kw1dw1", "pad_r + stride > 0"),  # output_padding 1 = stride: not oneDNN
])
def test_malformed_deconv_descriptors(desc, fragment):
    with pytest.raises(InvalidSpecError) as info:
        parse_descriptor(desc, transposed=True)
    assert fragment in str(info.value), str(info.value)


def test_bad_arguments():
    with pytest.raises(InvalidSpecError, match="bogus"):
        parse_descriptor("ic4oc4ih5kh3", bogus=1)
    with pytest.raises(InvalidSpecError, match="string"):
        parse_descriptor(56)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError, match="dtype"):
        parse_descriptor("ic4oc4ih5kh3", dtype="int4")


# ---- round trip ----------------------------------------------------------------------------------

CANONICAL = re.compile(r'g\d+mb\d+_ic\d+(i[dhw]\d+)+_oc\d+(o[dhw]\d+)+_(k[dhw]\d+)+_(s[dhw]\d+)+'
                       r'_(p[dhw]\d+)+(_(r[dhw]\d+)+)?_(d[dhw]\d+)+(_n".*")?')


def _onednn_pad_r(spec, j):
    """oneDNN's implied right padding for dim j of the formatted descriptor."""
    i, o, k, s = spec.input_size[j], spec.output_size[j], spec.kernel_size[j], spec.stride[j]
    ek = spec.dilation[j] * (k - 1) + 1
    pl = spec.padding[j][0]
    return ((i - 1) * s - o + ek - pl) if spec.transposed else ((o - 1) * s - i + ek - pl)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_round_trip(spec):
    desc = spec.to_benchdnn()
    assert desc == format_descriptor(spec)
    assert CANONICAL.fullmatch(desc), desc
    back = ConvSpec.from_benchdnn(desc, transposed=spec.transposed, dtype=spec.dtype,
                                  layout=spec.layout)
    assert back == spec and back.name == spec.name and back.key == spec.key
    if "_r" not in desc.split("_n")[0]:
        # pure oneDNN syntax: it satisfies oneDNN's consistency rule (pad_l >= 0, pad_r + s > 0)
        for j in range(spec.dims):
            assert _onednn_pad_r(spec, j) + spec.stride[j] > 0
    if spec.symmetric_padding and all(op < st for op, st in zip(spec.output_padding, spec.stride)):
        # symmetric specs need the extension only for output_padding >= stride (not oneDNN)
        assert "_r" not in desc.split("_n")[0]


def test_round_trip_defaults_without_overrides():
    s = ConvSpec(n=4, c_in=6, c_out=9, input_size=(5, 7, 9), kernel_size=(1, 2, 3), stride=(1, 2, 3),
                 padding=((0, 1), (1, 1), (2, 0)), dilation=(1, 2, 1), groups=3, name="blk")
    assert ConvSpec.from_benchdnn(s.to_benchdnn()) == s


def test_extension_only_where_onednn_cannot_tell_specs_apart():
    # stride 2, padding (1, 1) and (1, 0) on 56 both give 28 and read the same rows
    sym = ConvSpec(n=1, c_in=1, c_out=1, input_size=(56,), kernel_size=3, stride=2, padding=1)
    asym = sym.replace(padding=((1, 0),))
    assert sym.output_size == asym.output_size == (28,)
    assert sym.to_benchdnn() == "g1mb1_ic1iw56_oc1ow28_kw3_sw2_pw1_dw0"
    assert asym.to_benchdnn() == "g1mb1_ic1iw56_oc1ow28_kw3_sw2_pw1_rw0_dw0"
    assert ConvSpec.from_benchdnn(asym.to_benchdnn()) == asym
    # transposed, output_padding 1 >= stride 1 (valid for PyTorch since dilation 2 > 1)
    t = ConvSpec(n=1, c_in=1, c_out=1, input_size=(1,), kernel_size=1, dilation=2,
                 output_padding=1, transposed=True)
    assert t.to_benchdnn() == "g1mb1_ic1iw1_oc1ow2_kw1_sw1_pw0_rw0_dw1"   # op = 0 - (0 - 2 + 1)
    assert parse_descriptor(t.to_benchdnn(), transposed=True) == t


# ---- batch files ---------------------------------------------------------------------------------

def test_batch_options(tmp_path):
    text = r'''
# leading comment
--reset --dir=FWD_B
mb1ic4oc4ih8kh3n"a"   ic4oc4iw8kw3n"b"     # two on one line, trailing comment
--cfg=bf16bf16bf16 --mb=5
ic4oc4ih8kh3n"c"
--dt=f16
ic4oc4ih8kh3n"d"
--cfg=u8s8s8,f32 --mb=0,3
mb2ic4oc4ih8kh3n"e"
--reset
--attr-post-ops=relu --stag=axb -v1 --dir=BWD_D,FWD_D
ic4oc4ih8\
kh3n"f g"
--cfg=bf16bf16f32
ic4oc4ih8kh3n"h"
--cfg=f32_wino --deconv
ic4oc4ih8kh3n"i"
'''
    with pytest.warns(BenchdnnWarning) as record:
        specs = parse_batch_text(text, "opts")
    got = [(s.name, s.dtype, s.n, s.dims, s.transposed) for s in specs]
    assert got == [
        ("a", "float32", 1, 2, False), ("b", "float32", 2, 1, False),
        ("c", "bfloat16", 5, 2, False), ("d", "float16", 5, 2, False),
        ("e", "int8", 2, 2, False), ("e", "int8", 3, 2, False),
        ("e", "float32", 2, 2, False), ("e", "float32", 3, 2, False),
        ("f g", "float32", 2, 2, False), ("h", "bfloat16", 2, 2, False),
        ("i", "float32", 2, 2, True)]
    messages = " ".join(str(w.message) for w in record)
    for fragment in ("--attr-post-ops", "--stag", "-v1", "--dir=BWD_D", "u8s8s8", "mixed-precision"):
        assert fragment in messages, fragment
    assert "FWD_D" not in messages and "FWD_B" not in messages


def test_batch_without_options_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(parse_batch_text(RESNET_50_EXCERPT)) == 8


def test_batch_overrides_win(tmp_path):
    specs = parse_batch_text("--cfg=bf16 --mb=3 ic4oc4ih8kh3", layout="channels_last",
                             dtype="float64", n=1)
    assert [(s.dtype, s.layout, s.n) for s in specs] == [("float64", "channels_last", 1)]


def test_batch_include_and_read_file(tmp_path):
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "small").write_text('ic4oc4ih8kh3n"inner"\n--batch=more\n')
    (tmp_path / "shapes" / "more").write_text('ic4oc4iw8kw3n"more"\n')
    main = tmp_path / "main"
    main.write_text('--cfg=f16\n--batch=shapes/small\n--reset\nic2oc2id3kd1n"after"\n')
    specs = read_batch_file(main)
    assert [(s.name, s.dtype) for s in specs] == [
        ("inner", "float16"), ("more", "float16"), ("after", "float32")]
    assert read_batch_file(str(main), transposed=True)[0].transposed


def test_batch_deconv_file(tmp_path):
    p = tmp_path / "deconv"
    p.write_text("\n".join(DECONV_EXCERPT) + "\n")
    specs = read_batch_file(p, transposed=True)
    assert [s.output_size for s in specs] == [(227, 227), (1030, 1030), (1, 2)]


@pytest.mark.parametrize("text,fragment", [
    ("ic4oc4ih8kh3\n\nic4oc4ih8kh3xx\n", "src:3"),
    ("--mb=x ic4oc4ih8kh3", "--mb"),
    ("--mb=-1", "--mb"),
    ("--cfg= ic4oc4ih8kh3", "--cfg"),
    ("--batch=does_not_exist", "does_not_exist"),
    ("--batch=", "--batch"),
])
def test_batch_errors(text, fragment):
    with pytest.raises(SuiteError) as info:
        parse_batch_text(text, "src")
    assert fragment in str(info.value), str(info.value)


def test_batch_cycle_and_missing_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("--batch=b\n")
    b.write_text("ic4oc4ih8kh3 --batch=a\n")
    with pytest.raises(SuiteError, match="cycle"):
        read_batch_file(a)
    with pytest.raises(SuiteError, match="nope"):
        read_batch_file(tmp_path / "nope")


@pytest.mark.parametrize("value,dtype,noted", [
    ("f32", "float32", False), ("bf16bf16bf16", "bfloat16", False), ("f16", "float16", False),
    ("f64", "float64", False), ("f32_wino", "float32", False), ("bf16:bf16:f32", "bfloat16", True),
    ("bf16bf16f32", "bfloat16", True), ("f32f32f16", "float16", True),
    ("f16:bf16:f32", None, False), ("f8_e5m2", None, False),
    # int8 (oneDNN tests/benchdnn/doc/driver_conv.md: --dt=src:wei:dst or one type for all,
    # --cfg names such as u8s8u8): 8-bit src and dst with s8 weights are convbench's int8
    ("s8", "int8", False), ("s8:s8:s8", "int8", False), ("s8s8s8", "int8", False),
    ("u8s8s8", "int8", True), ("u8s8u8", "int8", True), ("s8s8u8", "int8", True),
    ("u8:s8:u8", "int8", True), ("U8:S8:S8", "int8", True), ("u8s8s8_wino", "int8", True),
    # not an int8 problem: wider destinations, u8 weights, two types, weight-only int8
    ("s8s8f32", None, False), ("s8:s8:f32", None, False), ("u8s8s32", None, False),
    ("s8s8s32", None, False), ("u8", None, False), ("s32", None, False), ("s8:s8", None, False),
    ("f32:s8:f32", None, False), ("s8s8", None, False)])
def test_cfg_to_dtype(value, dtype, noted):
    dt, note = cfg_to_dtype(value)
    assert dt == dtype and bool(note) == noted


def test_int8_batch_file_from_onednn_docs():
    # the driver doc's own example: "--dt=f32,u8:s8:u8 ... alexnet:conv1" (oneDNN
    # tests/benchdnn/doc/driver_conv.md), then an exact s8 configuration and a skipped s8s8f32
    text = ('--mb=4 --dir=FWD_B --dt=f32,u8:s8:u8\n'
            'ic3ih227iw227_oc96oh55ow55_kh11kw11_sh4sw4ph0pw0_n"alexnet:conv1"\n'
            '--reset --cfg=s8s8s8 mb1ic64ih56oc64kh3ph1n"res2a"\n'
            '--cfg=s8s8f32 mb1ic64ih56oc64kh3ph1n"skipped"\n')
    with pytest.warns(BenchdnnWarning) as record:
        specs = parse_batch_text(text, "int8-batch")
    assert [(s.name, s.dtype, s.n) for s in specs] == [
        ("alexnet:conv1", "float32", 4), ("alexnet:conv1", "int8", 4), ("res2a", "int8", 1)]
    assert specs[1].output_size == (55, 55) and specs[1].c_out == 96
    messages = [str(w.message) for w in record]
    assert any("u8:s8:u8" in m and "taken as s8" in m for m in messages), messages
    assert any("--cfg=s8s8f32 (1 problems)" in m and "int8" in m for m in messages), messages
    # the exact s8 configuration warns about nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_batch_text("--dt=s8:s8:s8 ic4oc4ih8kh3")[0].dtype == "int8"
