"""numpy-im2col with a deliberate busy-wait added to every run(): a known regression for
benchmarks/compare_slowed.py to find. Registered in-process only, never through entry points."""
import time

from convbench_backends.numpy_im2col import NumpyIm2col

EXTRA_S = 20e-6  # added to every call


class SlowedIm2col(NumpyIm2col):
    name = "numpy-im2col"

    def _prepare(self, spec, x, w, algorithm, device):
        p = super()._prepare(spec, x, w, algorithm, device)
        inner = p.run

        def run():
            inner()
            end = time.perf_counter() + EXTRA_S
            while time.perf_counter() < end:
                pass

        p.run = run
        p.info["deliberately_slowed_s"] = EXTRA_S
        return p
