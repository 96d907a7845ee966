"""Memory estimates shared by the framework backends (torch, tensorflow); private to
convbench_backends. The numbers are upper-ish: supports() refuses what does not fit in the
memory available (convbench.memory), so an estimate errs on the high side for the big parts
(workspaces) and ignores the small ones (kernels' own bookkeeping).
"""
from __future__ import annotations

import math

from convbench.memory import MemoryEstimate, columns_bytes, io_parts
from convbench.spec import ConvSpec


def padded_input_bytes(spec: ConvSpec) -> int:
    """The input with its padding materialised (an explicit pad before the convolution)."""
    spatial = math.prod(i + pb + pa for i, (pb, pa) in zip(spec.input_size, spec.padding))
    return spec.n * spec.c_in * spatial * spec.itemsize


def framework_estimate(spec: ConvSpec, *, columns_images: int, layout_copies: bool = False,
                       padded_input: bool = False, group_outputs: bool = False) -> MemoryEstimate:
    """A framework convolution on the CPU:

    - the caller's input and weights;
    - "framework copies": the framework's own copy of each, and a reordered (blocked) copy of
      each as oneDNN makes: 2 x (input + weights);
    - "output": the framework's output, a reordered output and the numpy copy result() returns
      (3 x output);
    - "im2col workspace": the column matrix of ``columns_images`` images of one group
      (:func:`convbench.memory.columns_bytes`, at least float32 elements): the gemm-based
      kernels' workspace (oneDNN's gemm fallback, torch's native kernels, TensorFlow's
      Eigen/col2im paths);
    - "layout conversions": one more input and output when run() converts layouts;
    - "padded input": an explicit pad before the convolution;
    - "group outputs": one more output when groups run one at a time and are concatenated.
    """
    io = io_parts(spec)
    parts = {"input": io["input"], "weights": io["weights"],
             "framework copies": 2 * (io["input"] + io["weights"]),
             "output": 3 * io["output"],
             "im2col workspace": columns_bytes(spec, columns_images, max(spec.itemsize, 4))}
    if layout_copies:
        parts["layout conversions"] = io["input"] + io["output"]
    if padded_input:
        parts["padded input"] = padded_input_bytes(spec)
    if group_outputs:
        parts["group outputs"] = io["output"]
    return MemoryEstimate(parts)
