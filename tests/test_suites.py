"""Suites: the shipped TOML files (real layer shapes), grids, filters, overrides, errors."""
from __future__ import annotations

import textwrap

import pytest

from convbench import ConvSpec
from convbench.errors import SuiteError
from convbench.suites import Condition, list_suites, load_suite, merge_suites, suite_from_specs

REQUIRED = {"quick", "resnet50", "mobilenet_v2", "alexnet", "vgg16", "dcgan", "deeplab", "wav2vec2",
            "c3d", "kernel_grid", "int8"}


def write(tmp_path, text: str, name: str = "s.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def macs(suite, prefix: str = "") -> int:
    """Multiply-accumulates of a network: every distinct layer times its count."""
    return sum(p.spec.flops // 2 * suite.counts[p.name] for p in suite if p.name.startswith(prefix))


# ---- shipped suites --------------------------------------------------------------------------
def test_required_suites_are_shipped():
    assert REQUIRED <= set(list_suites())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_suite_loads_with_source_and_distinct_layers(name):
    suite = load_suite(name)
    assert suite.name == name
    assert len(suite.source) > 20 and len(suite.description) > 10
    assert suite.problems
    keys = [p.spec.key for p in suite]
    assert len(keys) == len(set(keys)), "identical layers must appear once (with a count)"
    for p in suite:
        assert isinstance(p.spec, ConvSpec) and p.spec.name == p.name
        assert suite.counts[p.name] >= 1
        assert all(o >= 1 for o in p.spec.output_size)
        # every spec survives a round trip through its dict form
        assert ConvSpec.from_dict(p.spec.to_dict()) == p.spec


# torchvision's model tables list "GFLOPS" (multiply-accumulates, convs + linear layers):
# resnet50 4.09, vgg16 15.47, alexnet 0.71, mobilenet_v2 0.30. The fc layers come from the papers.
@pytest.mark.parametrize("name,prefix,fc_macs,gmacs,convs", [
    ("resnet50", "", 2048 * 1000, 4.09, 53),
    ("vgg16", "", 25088 * 4096 + 4096 * 4096 + 4096 * 1000, 15.47, 13),
    ("alexnet", "tv.", 9216 * 4096 + 4096 * 4096 + 4096 * 1000, 0.71, 5),
    ("mobilenet_v2", "", 1280 * 1000, 0.30, 52),
])
def test_network_totals_match_torchvision(name, prefix, fc_macs, gmacs, convs):
    suite = load_suite(name)
    total = (macs(suite, prefix) + fc_macs) / 1e9
    assert abs(total - gmacs) < 0.005 + 1e-9, total
    assert sum(c for p, c in suite.counts.items() if p.startswith(prefix)) == convs


def test_resnet50_v15_strides_on_the_3x3():
    suite = {p.name: p.spec for p in load_suite("resnet50")}
    for stage, size in (("layer2", 56), ("layer3", 28), ("layer4", 14)):
        conv2 = suite[f"{stage}.0.conv2"]
        assert conv2.kernel_size == (3, 3) and conv2.stride == (2, 2) and conv2.input_size == (size, size)
        assert suite[f"{stage}.0.conv1"].stride == (1, 1)


def test_mobilenet_v2_depthwise_and_pointwise():
    suite = load_suite("mobilenet_v2")
    dw = [p.spec for p in suite if p.spec.depthwise]
    pw = [p.spec for p in suite if p.spec.kernel_size == (1, 1)]
    assert len(dw) + len(pw) + 1 == len(suite)  # + the stem
    assert all(s.kernel_size == (3, 3) and s.c_in == s.c_out == s.groups for s in dw)
    assert sum(suite.counts[p.name] for p in suite if p.spec.depthwise) == 17


def test_wav2vec2_feature_encoder_chain():
    suite = load_suite("wav2vec2")
    enc = [p.spec for p in suite if p.name.startswith("conv")]
    assert [s.kernel_size[0] for s in enc] == [10, 3, 3, 3, 3, 2, 2]
    assert [s.stride[0] for s in enc] == [5, 2, 2, 2, 2, 2, 2]
    assert enc[0].input_size == (16000,) and enc[0].c_in == 1
    assert all(s.c_out == 512 and s.dims == 1 for s in enc)
    for a, b in zip(enc, enc[1:]):  # each layer eats the previous one's output
        assert b.input_size == a.output_size and b.c_in == a.c_out
    assert enc[-1].output_size == (49,)  # 20 ms frames over one second (the paper's 49)


def test_other_suites_have_their_kind():
    assert all(p.spec.transposed for p in load_suite("dcgan"))
    assert load_suite("dcgan").problems[-1].spec.output_size == (64, 64)
    deeplab = {p.name: p.spec for p in load_suite("deeplab")}
    assert [deeplab[f"aspp.rate{r}"].dilation for r in (12, 24, 36)] == [(12, 12), (24, 24), (36, 36)]
    assert all(s.output_size == s.input_size for s in deeplab.values())
    c3d = load_suite("c3d")
    assert all(p.spec.dims == 3 for p in c3d) and sum(c3d.counts.values()) == 8
    orig = [p.spec for p in load_suite("alexnet") if p.name.startswith("orig.")]
    assert [s.groups for s in orig] == [1, 2, 1, 2, 2]


def test_kernel_grid_covers_1d_and_2d_kernels():
    suite = load_suite("kernel_grid")
    k1 = sorted(p.spec.kernel_size[0] for p in suite if p.spec.dims == 1)
    k2 = sorted(p.spec.kernel_size[0] for p in suite if p.spec.dims == 2)
    assert k1 == list(range(1, 32, 2)) and k2 == list(range(1, 16, 2))
    assert all(p.spec.output_size == p.spec.input_size for p in suite)  # "same" padding


def test_quick_is_small_and_varied():
    suite = load_suite("quick")
    specs = [p.spec for p in suite]
    assert 4 <= len(specs) <= 6
    assert any(s.dims == 1 for s in specs)
    assert any(s.depthwise for s in specs)
    assert any(any(st > 1 for st in s.stride) for s in specs)
    assert any(s.transposed for s in specs)
    assert all(s.flops < 2e6 for s in specs)


def test_int8_suite_is_network_layers_at_batch_1_and_8():
    suite = load_suite("int8")
    assert 10 <= len(suite) <= 16
    nets = {name: {p.name: p.spec for p in load_suite(name)} for name in ("resnet50", "mobilenet_v2")}
    layers: dict[tuple[str, str], set[int]] = {}
    for p in suite:
        net, _, rest = p.name.partition(".")
        layer, _, batch = rest.rpartition("-n")
        # the same-named layer of the network's own suite (checked there against torchvision)
        expected = nets[net][layer].replace(n=int(batch), dtype="int8", name=p.name)
        assert p.spec == expected and p.spec.dtype == "int8", p.name
        layers.setdefault((net, layer), set()).add(p.spec.n)
    assert all(ns == {1, 8} for ns in layers.values()), layers
    assert {net for net, _ in layers} == {"resnet50", "mobilenet_v2"}
    specs = suite.specs()
    assert any(s.depthwise for s in specs) and any(s.stride[0] == 2 for s in specs)
    assert any(s.kernel_size == (1, 1) for s in specs) and any(s.kernel_size == (3, 3) and
                                                                s.groups == 1 for s in specs)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_dtype_int8_on_any_suite(name):
    base = load_suite(name)
    suite = load_suite(name, dtype="int8")
    assert [p.name for p in suite] == [p.name for p in base]
    for p, q in zip(suite, base):
        assert p.spec.dtype == "int8" and "s8" in p.spec.label
        assert p.spec.replace(dtype=q.spec.dtype) == q.spec
        assert p.spec.flops == q.spec.flops      # integer ops counted like float ones


def test_sweep_dtype_int8_reaches_the_plan(tmp_path):
    import convbench

    res = convbench.sweep("quick", dtype="int8", backends=["numpy-im2col"], dry_run=True,
                          out=tmp_path, progress=False)
    assert res.suite is not None and {s.dtype for s in res.suite.specs()} == {"int8"}
    assert {e.problem for e in res.plan} == {p.name for p in res.suite}


# ---- overrides, lookups, specs ----------------------------------------------------------------
def test_overrides_apply_to_every_problem():
    suite = load_suite("quick", n=4, dtype="float16", layout="channels_last")
    base = load_suite("quick")
    assert len(suite) == len(base)
    for p, q in zip(suite, base):
        assert (p.spec.n, p.spec.dtype, p.spec.layout) == (4, "float16", "channels_last")
        assert p.spec.replace(n=q.spec.n, dtype=q.spec.dtype, layout=q.spec.layout) == q.spec


def test_unknown_suite_lists_shipped_ones():
    with pytest.raises(SuiteError, match="resnet50"):
        load_suite("resnet5O")


def test_suite_by_path_and_benchdnn_problem(tmp_path):
    p = write(tmp_path, """
        [suite]
        name = "mine"
        source = "test"
        [defaults]
        dtype = "float64"
        [[problem]]
        benchdnn = 'mb1ic64ih56oc64kh3ph1n"res2a"'
        [[problem]]
        name = "explicit"
        benchdnn = "mb2ic8iw100oc4kw5"
        layout = "channels_last"
    """)
    suite = load_suite(p)
    assert [q.name for q in suite] == ["res2a", "explicit"]
    res2a = suite.problems[0].spec
    assert res2a == ConvSpec(n=1, c_in=64, c_out=64, input_size=(56, 56), kernel_size=3, padding=1,
                             dtype="float64")
    exp = suite.problems[1].spec
    assert (exp.dims, exp.n, exp.dtype, exp.layout) == (1, 2, "float64", "channels_last")


def test_benchdnn_batch_file(tmp_path):
    p = tmp_path / "shapes_mine"
    p.write_text("# two layers\nmb1ic3ih32oc8kh3ph1n\"a\"\nmb1ic8ih32oc8kh3ph1\n")
    suite = load_suite(p)
    assert suite.name == "shapes_mine" and len(suite) == 2
    assert suite.problems[0].name == "a" and suite.problems[1].name == "shapes_mine-2"
    assert suite.problems[1].spec.c_in == 8


def test_suite_from_specs_and_merge():
    a = suite_from_specs(["mb1ic4ih8oc4kh3ph1", ConvSpec(n=1, c_in=1, c_out=1, input_size=(9,),
                                                          kernel_size=3, name="one")])
    assert [p.name for p in a] == ["spec1", "one"]
    merged = merge_suites(load_suite("quick"), a)
    assert len(merged) == len(load_suite("quick")) + 2
    with pytest.raises(SuiteError, match="duplicate problem name"):
        merge_suites(a, a)


# ---- grids and filters -----------------------------------------------------------------------
def test_grid_is_a_cartesian_product_with_fixed_fields(tmp_path):
    p = write(tmp_path, """
        [suite]
        name = "g"
        [defaults]
        n = 1
        c_in = 4
        [[grid]]
        name = "g"
        c_out = 8
        input_size = [16, 16]
        axes = { kernel_size = [1, 3, 5], stride = [1, 2] }
    """)
    suite = load_suite(p)
    assert len(suite) == 6 and suite.dropped == {"invalid": 0, "filtered": 0}
    combos = {(q.spec.kernel_size[0], q.spec.stride[0]) for q in suite}
    assert combos == {(k, s) for k in (1, 3, 5) for s in (1, 2)}
    assert all(q.spec.c_in == 4 and q.spec.c_out == 8 for q in suite)
    assert "g[kernel_size=3,stride=2]" in suite.counts


def test_grid_drops_invalid_points_and_filters_counted(tmp_path):
    p = write(tmp_path, """
        [suite]
        name = "g"
        [[grid]]
        name = "k{kernel_size}-s{stride}-c{c_in}"
        n = 1
        c_out = 2
        input_size = [6]
        axes = { kernel_size = [1, 3, 9], stride = [1, 2, 4], c_in = [1, 2] }
        skip_if = ["stride > kernel_size"]
        where = ["c_in * 2 <= c_out", "output_size >= 2"]
    """)
    suite = load_suite(p)
    # kernel 9 > input 6: 6 points invalid. Of the 12 valid, stride > kernel drops
    # (k1,s2),(k1,s4),(k3,s4) x 2 c_in = 6; c_in*2 <= 2 keeps c_in=1 only: 3 more dropped;
    # output_size >= 2: k3 s3? none; (k1,s1): 6, (k3,s1): 4, (k3,s2): 2 -> all kept.
    assert suite.dropped == {"invalid": 6, "filtered": 9}
    assert sorted(suite.counts) == ["k1-s1-c1", "k3-s1-c1", "k3-s2-c1"]


def test_grid_that_keeps_nothing_is_an_error(tmp_path):
    p = write(tmp_path, """
        [[grid]]
        n = 1
        c_in = 1
        c_out = 1
        input_size = [4]
        axes = { kernel_size = [9, 10] }
    """)
    with pytest.raises(SuiteError, match=r"\[\[grid\]\] #1.*every grid point"):
        load_suite(p)


@pytest.mark.parametrize("text,expected", [
    ("stride > kernel_size", False),      # (2, 1) > (1, 1): not in every dimension
    ("stride >= kernel_size", True),
    ("kernel_size * 2 == 2", True),
    ("c_in + c_out - 1 == 10", True),
    ("c_in % 4 == 1", True),
    ("flops / 2 < 1000000", True),
    ("1 < c_in < 6", True),               # chained
    ("1 < c_in < 5", False),
    ("output_size == (input_size - kernel_size) / stride + 1", False),  # true division: 4.5
    ("-1 < dims", True),
    ("padding == 0", True),
    ("depthwise == 0", True),
])
def test_conditions(text, expected):
    spec = ConvSpec(n=1, c_in=5, c_out=6, input_size=(8, 8), kernel_size=1, stride=(2, 1))
    assert Condition(text)(spec) is expected


@pytest.mark.parametrize("text,match", [
    ("__import__('os') > 1", "unknown name '__import__'"),
    ("open > 1", "unknown name 'open'"),
    ("c_in", "needs a comparison"),
    ("c_in > ", "ends too early"),
    ("(c_in > 1", "unexpected|missing"),
    ("c_in.real > 1", "unexpected character"),
])
def test_conditions_reject_anything_else(text, match):
    with pytest.raises(ValueError, match=match):
        Condition(text)


# ---- malformed files -------------------------------------------------------------------------
@pytest.mark.parametrize("body,match", [
    ("[suite\nname = 'x'", r"not valid TOML"),
    ("[[problem]]\nname = 'a'\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\nkernel_size = 3\n"
     "[[problem]]\nname = 'b'\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\nkernal_size = 3\n",
     r"\[\[problem\]\] #2: unknown field\(s\) 'kernal_size'"),
    ("[[problem]]\nname = 'a'\nn = 1\nc_in = 3\nc_out = 4\ninput_size = [8]\nkernel_size = 3\ngroups = 2\n",
     r"\[\[problem\]\] #1: invalid spec: groups: c_in=3 is not divisible by groups=2"),
    ("[[problem]]\nname = 'a'\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\nkernel_size = 3\n"
     "[[problem]]\nname = 'a'\nn = 1\nc_in = 2\nc_out = 1\ninput_size = [8]\nkernel_size = 3\n",
     r"\[\[problem\]\] #2: duplicate problem name 'a'"),
    ("[[problem]]\nname = 'a'\nc_in = 1\nc_out = 1\ninput_size = [8]\nkernel_size = 3\n",
     r"#1: invalid spec: spec is missing required field\(s\): n"),
    ("[[problem]]\nname = 'a'\ncount = 0\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\nkernel_size = 3\n",
     r"count: 0 must be an integer >= 1"),
    ("[[grid]]\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\naxes = { kernel_size = 3 }\n",
     r"\[\[grid\]\] #1: axes.kernel_size: 3 must be a non-empty list"),
    ("[[grid]]\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\naxes = { kernel = [3] }\n",
     r"\[\[grid\]\] #1 axes: unknown field\(s\) 'kernel'"),
    ("[[grid]]\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\naxes = { kernel_size = [3] }\n"
     "skip_if = ['kernel_size >> 1']\n", r"skip_if\[0\] 'kernel_size >> 1'"),
    ("[[grid]]\nname = 'k{kernel}'\nn = 1\nc_in = 1\nc_out = 1\ninput_size = [8]\n"
     "axes = { kernel_size = [3] }\n", r"refers to 'kernel', which is not an axis"),
    ("[sweet]\nname = 'x'\n", r"unknown field\(s\) 'sweet'"),
    ("[suite]\nname = 'x'\n", r"no \[\[problem\]\] or \[\[grid\]\] tables"),
    ("[[problem]]\nname = 'a'\nbenchdnn = 'mb1ic4oc4kh3'\n", r"#1: benchdnn 'mb1ic4oc4kh3'"),
])
def test_malformed_files_name_file_table_and_field(tmp_path, body, match):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(SuiteError, match=match) as info:
        load_suite(p)
    assert str(p) in str(info.value)


def test_override_making_an_invalid_spec_is_named():
    with pytest.raises(SuiteError, match=r"problem 'ds_cnn.conv_1': override"):
        load_suite("quick", dtype="int4")
