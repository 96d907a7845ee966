"""The conformance suite itself: it must pass a correct backend and catch each kind of broken one."""
import numpy as np
import pytest

import convbench as cb
from convbench.registry import Backend, Capabilities, Prepared, Support
from convbench.spec import numpy_dtype
from convbench.testing import check_backend, check_declarations, fixed_specs, random_specs


class _P(Prepared):
    def __init__(self, spec, x, w, mode):
        self.spec, self.x, self.w, self.mode, self.info = spec, x, w, mode, {}
        self.calls = 0

    def run(self):
        self.calls += 1
        y = cb.reference(self.spec, self.x, self.w)
        if self.mode == "wrong":
            y = y * 1.01
        if self.mode == "mutate":
            self.x[...] = 0
        if self.mode == "stateful":
            y = y * self.calls
        self.y = y

    def result(self):
        if self.mode == "shape":
            return self.y[:, :1].astype(numpy_dtype(self.spec.dtype))
        if self.mode == "dtype":
            return self.y
        return self.y.astype(numpy_dtype(self.spec.dtype))


def make_backend(mode, xfail=False):
    class B(Backend):
        name = f"test-{mode}"
        family = "test"
        capabilities = Capabilities(transposed=False)

        def algorithms(self, device="cpu"):
            return ["a"]

        def expected_failure(self, spec, device, algorithm):
            return "declared: scales by 1.01" if xfail else None

        def _prepare(self, spec, x, w, algorithm, device):
            if spec.transposed:
                raise RuntimeError("boom")
            return _P(spec, x, w, mode)
    return B()


SPECS = fixed_specs()[:12] + random_specs(4, seed=1)


def test_correct_backend_passes_and_refuses_transposed():
    r = check_backend(make_backend("good"), specs=SPECS)
    assert r.ok, r.summary()
    assert r.count("refused") >= 1 and r.count("pass") >= 10
    assert r.max_error["float32"] < 1e-6


@pytest.mark.parametrize("mode,what", [("wrong", "exceeds"), ("mutate", "inputs were modified"),
                                       ("shape", "output shape"), ("dtype", "dtype"),
                                       ("stateful", "second run")])
def test_broken_backends_fail(mode, what):
    r = check_backend(make_backend(mode), specs=SPECS)
    assert not r.ok
    assert any(what in f.message for f in r.failures), r.summary()


def test_expected_failure_is_reported_not_failed():
    r = check_backend(make_backend("wrong", xfail=True), specs=SPECS)
    assert r.ok and r.count("xfail") > 0
    assert all("declared" in x.message for x in r.results if x.status == "xfail")


def test_unclean_refusal_fails():
    class Sloppy(Backend):
        name = "test-sloppy"
        family = "test"
        capabilities = Capabilities(transposed=False)

        def algorithms(self, device="cpu"):
            return ["a"]

        def prepare(self, spec, x, w, algorithm=None, device="cpu"):  # skips the validation
            return self._prepare(spec, x, w, algorithm, device)

        def _prepare(self, spec, x, w, algorithm, device):
            if spec.transposed:
                raise RuntimeError("boom")
            return _P(spec, x, w, "good")

    r = check_backend(Sloppy(), specs=SPECS)
    assert not r.ok
    assert any("not refused cleanly" in f.message and "boom" in f.message for f in r.failures)


def test_random_specs_are_valid_and_varied():
    specs = random_specs(200, seed=0)
    assert len({s.key for s in specs}) > 150
    assert {s.dims for s in specs} == {1, 2, 3}
    assert any(s.transposed for s in specs) and any(s.groups > 1 for s in specs)
    assert any(not s.symmetric_padding for s in specs) and any(d > 1 for s in specs for d in s.dilation)
    assert {s.dtype for s in specs} == {"float64", "float32", "float16", "bfloat16"}
    assert {s.layout for s in specs} == {"channels_first", "channels_last"}


@pytest.mark.parametrize("name", cb.list_backends())
def test_every_registered_backend_keeps_its_declarations(name):
    """Lazy framework imports, the install hint, supports()/prepare() with the frameworks missing."""
    assert check_declarations(name) == []


def test_declaration_checks_catch_each_kind_of_broken_backend():
    import fake_backends as fb

    assert check_declarations(fb.FakeLazyFramework()) == []
    [eager] = check_declarations(fb.FakeEagerFramework())
    assert "imported wave" in eager
    [raised] = check_declarations(fb.FakeFrameworkInSupports())
    assert "supports(" in raised and "wave" in raised
    [undeclared] = check_declarations(fb.FakeUndeclaredFramework())
    assert "available() says yes" in undeclared
    [no_hint] = check_declarations(fb.FakeNoHint())
    assert "no install_hint" in no_hint
    assert check_declarations(fb.FakeUnavailable()) == []  # the registry appends the hint


def test_declaration_problems_fail_the_report():
    import fake_backends as fb

    r = check_backend(fb.FakeEagerFramework(), specs=SPECS[:2])
    assert r.status == "fail" and not r.ok and "imported wave" in r.summary()
