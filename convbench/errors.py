"""The one error hierarchy users of convbench see."""
from __future__ import annotations


class ConvbenchError(Exception):
    """Base class of every error convbench raises on purpose."""


class InvalidSpecError(ConvbenchError, ValueError):
    """A convolution problem (ConvSpec, benchdnn descriptor, suite entry) is impossible or malformed."""


class InvalidInputError(ConvbenchError, ValueError):
    """Arrays handed to convbench do not match the spec (shape, dtype, layout)."""


class UnknownBackendError(ConvbenchError, LookupError):
    """A backend or candidate name that no registered backend answers to."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(ConvbenchError):
    """The backend's dependency is missing; the message carries the install hint."""


class UnsupportedError(ConvbenchError):
    """The backend (or algorithm/device) does not support this spec; the message says why."""


class SuiteError(ConvbenchError):
    """A suite file or batch file is malformed."""


class ResultsError(ConvbenchError):
    """A results directory or file is missing or corrupt."""


class CacheError(ConvbenchError):
    """The tuned-algorithm cache is unreadable, corrupt or used wrongly."""
