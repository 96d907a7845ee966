"""convbench: which convolution implementation is fastest for this shape on this machine.

The public API lives here; everything else is in modules users need not know.
``import convbench`` imports neither torch nor TensorFlow (nor pandas).
"""
from __future__ import annotations

from typing import Any

from .errors import (BackendUnavailableError, CacheError, ConvbenchError, InvalidInputError,
                     InvalidSpecError, ResultsError, SuiteError, UnknownBackendError,
                     UnsupportedError)
from .reference import make_inputs, output_error, reference, relative_error, tolerance
from .registry import (Backend, Candidate, Capabilities, DeviceTimer, Prepared, Support,
                       convolve, get_backend, list_backends, register)
from .spec import ConvSpec

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so `import convbench` stays light.
_LAZY = {
    "lookup": "convbench.cache",
    "conv": "convbench.dispatch",
    "load_results": "convbench.results",
    "sweep": "convbench.sweeping",
    "load_suite": "convbench.suites",
    "check_backend": "convbench.testing",
    "tune_model": "convbench.models",
    "use_tuned": "convbench.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            if exc.name == _LAZY[name]:
                raise AttributeError(f"convbench.{name} is not available in this build") from exc
            raise
        value = getattr(module, name)
        globals()[name] = value  # later look-ups skip this function (convbench.conv is hot)
        return value
    raise AttributeError(f"module 'convbench' has no attribute {name!r}")


__all__ = [
    "ConvSpec", "make_inputs", "reference", "relative_error", "output_error", "tolerance",
    "Backend", "Prepared", "DeviceTimer", "Capabilities", "Candidate", "Support",
    "list_backends", "get_backend", "register", "convolve",
    "lookup", "conv", "load_results", "sweep", "load_suite", "check_backend",
    "tune_model", "use_tuned",
    "ConvbenchError", "InvalidSpecError", "InvalidInputError", "UnknownBackendError",
    "BackendUnavailableError", "UnsupportedError", "SuiteError", "ResultsError", "CacheError",
    "__version__",
]
