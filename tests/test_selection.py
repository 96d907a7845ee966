"""Winner selection: decisive wins, ties broken by robustness, edge cases."""
from __future__ import annotations

import pytest

from convbench.errors import ResultsError
from convbench.selection import (RULE_FASTEST, RULE_ONLY, RULE_TIE, precomputes_weights,
                                 robustness_rank, select_winners)


def rec(candidate: str, median: float, lo: float, hi: float, *, problem: str = "p", status: str = "ok",
        device: str = "cpu", key: str = "K", info=None, ts: str = "2025-01-01T00:00:00Z") -> dict:
    backend, rest = candidate.split(":")
    algorithm = rest.split("@")[0]
    ok = status == "ok"
    return {"problem": problem, "device": device, "spec_key": key, "candidate": f"{candidate}@{device}"
            if "@" not in candidate else candidate, "backend": backend, "algorithm": algorithm,
            "status": status, "median_s": median if ok else None, "ci_low_s": lo if ok else None,
            "ci_high_s": hi if ok else None, "info": info or {}, "timestamp": ts}


def test_decisive_winner():
    w = select_winners([rec("numpy-fft:rfft", 2.0, 1.9, 2.1), rec("torch:default", 1.0, 0.95, 1.05),
                        rec("numpy-direct:einsum", 5.0, 4.0, 6.0)])[("p", "cpu")]
    assert w.candidate == "torch:default@cpu" and w.median_s == 1.0
    assert w.runner_up == "numpy-fft:rfft@cpu" and w.runner_up_median_s == 2.0
    assert w.margin == pytest.approx(1.0) and w.decisive and w.tie_break_rule == RULE_FASTEST
    assert w.tied == ["torch:default@cpu"] and w.n_ok == 3 and w.spec_key == "K"


def test_tie_goes_to_the_most_robust_candidate():
    # numpy-fft is fastest by median, but torch's is within the minimum effect: torch (framework) wins
    w = select_winners([rec("numpy-fft:rfft", 1.00, 0.97, 1.03), rec("torch:default", 1.02, 1.00, 1.05),
                        rec("numpy-direct:einsum", 1.5, 1.45, 1.55)])[("p", "cpu")]
    assert w.candidate == "torch:default@cpu" and w.tie_break_rule == RULE_TIE and not w.decisive
    assert w.runner_up == "numpy-fft:rfft@cpu"
    assert w.margin == pytest.approx(1.00 / 1.02 - 1)  # negative: the robust pick is a bit slower
    assert w.tied == ["numpy-fft:rfft@cpu", "torch:default@cpu"]


def test_a_wide_ci_is_no_tie_and_no_decisive_win():
    # torch's CI is huge (noisy machine) and overlaps numpy's, but its median is 10x slower
    w = select_winners([rec("numpy-im2col:gemm", 1.0, 0.98, 1.02), rec("torch:native", 10.0, 0.5, 20.0),
                        rec("numpy-direct:einsum", 3.0, 2.9, 3.1)])[("p", "cpu")]
    assert w.candidate == "numpy-im2col:gemm@cpu" and w.tie_break_rule == RULE_FASTEST
    assert w.runner_up == "numpy-direct:einsum@cpu" and w.decisive  # vs the runner-up by median
    w = select_winners([rec("numpy-im2col:gemm", 1.0, 0.98, 1.02),
                        rec("torch:native", 1.5, 0.5, 3.0)])[("p", "cpu")]
    assert w.candidate == "numpy-im2col:gemm@cpu" and not w.decisive and w.tied == ["numpy-im2col:gemm@cpu"]


def test_tie_prefers_no_weight_precomputation_then_median():
    recs = [rec("scipy-fft:rfft-precomputed-weights", 1.00, 0.9, 1.1),
            rec("numpy-fft:rfft", 1.05, 0.95, 1.15),
            rec("scipy-fft:rfft", 1.02, 0.96, 1.12)]
    w = select_winners(recs)[("p", "cpu")]
    assert w.candidate == "scipy-fft:rfft@cpu"  # same group as numpy-fft, faster median
    assert precomputes_weights(recs[0]) and not precomputes_weights(recs[1])
    flagged = rec("mine:fast", 1.0, 0.9, 1.1, info={"weights_precomputed": True})
    assert precomputes_weights(flagged)
    assert robustness_rank(rec("torch:x", 9, 9, 9)) < robustness_rank(rec("numba:x", 1, 1, 1)) \
        < robustness_rank(rec("thirdparty:x", 0.5, 0.5, 0.5))


def test_only_candidate_and_no_ok_candidate():
    ws = select_winners([rec("torch:default", 1.0, 0.9, 1.1, problem="a"),
                         rec("numpy-fft:rfft", 1.0, 0.9, 1.1, problem="a", status="crashed"),
                         rec("numpy-fft:rfft", 1.0, 0.9, 1.1, problem="b", status="wrong")])
    assert set(ws) == {("a", "cpu")}
    w = ws[("a", "cpu")]
    assert w.runner_up is None and w.margin is None and w.tie_break_rule == RULE_ONLY and w.decisive


def test_devices_are_separate_and_latest_record_counts():
    ws = select_winners([
        rec("torch:default", 3.0, 2.9, 3.1), rec("torch:default", 1.0, 0.9, 1.1, ts="2025-02-01T00:00:00Z"),
        rec("numpy-fft:rfft", 2.0, 1.9, 2.1),
        rec("torch:cudnn", 0.1, 0.09, 0.11, device="cuda"),
    ])
    assert ws[("p", "cpu")].candidate == "torch:default@cpu" and ws[("p", "cpu")].median_s == 1.0
    assert ws[("p", "cuda")].candidate == "torch:cudnn@cuda"


def test_missing_ci_falls_back_to_the_median_and_dataframe_input():
    pd = pytest.importorskip("pandas")
    recs = [rec("torch:default", 1.0, None, None), rec("numpy-fft:rfft", 2.0, None, None)]
    for r in recs:
        r["ci_low_s"] = r["ci_high_s"] = None
    w = select_winners(pd.DataFrame(recs))[("p", "cpu")]
    assert w.candidate == "torch:default@cpu" and w.decisive


def test_conflicting_specs_under_one_problem_name():
    with pytest.raises(ResultsError, match="two different specs"):
        select_winners([rec("torch:default", 1, 1, 1, key="A"), rec("numpy-fft:rfft", 1, 1, 1, key="B")])


def test_tie_break_asks_the_backends_declarations():
    from convbench import registry
    from convbench.registry import Backend, Capabilities, Robustness

    class ThirdParty(Backend):
        name = "thirdparty-framework"
        capabilities = Capabilities()
        robustness = Robustness.FRAMEWORK
        precomputed_algorithms = frozenset({"packed"})

        def algorithms(self, device="cpu"):
            return ["plain", "packed"]

        def _prepare(self, spec, x, w, algorithm, device):  # pragma: no cover
            raise AssertionError

    registry.register(ThirdParty)
    try:
        # declared a framework: beats a JIT backend in a tie, like a built-in framework would
        w = select_winners([rec("numba:direct", 1.00, 0.9, 1.1),
                            rec("thirdparty-framework:plain", 1.05, 1.0, 1.1)])[("p", "cpu")]
        assert w.candidate == "thirdparty-framework:plain@cpu"
        assert precomputes_weights(rec("thirdparty-framework:packed", 1, 1, 1))
        assert not precomputes_weights(rec("thirdparty-framework:plain", 1, 1, 1))
        # the name alone no longer counts: an undeclared "prepacked" algorithm is not precomputing
        assert not precomputes_weights(rec("unregistered:prepacked", 1, 1, 1))
    finally:
        registry.unregister(ThirdParty.name)
