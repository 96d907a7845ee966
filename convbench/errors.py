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


class _RefusedFile:
    """Mixin of the errors for an input file that was refused: ``path``, ``field`` (None for
    the file as a whole) and ``problem`` say which file, which part and what is wrong."""

    def __init__(self, path: object, field: "str | None", problem: str, *,
                 message: "str | None" = None) -> None:
        self.path, self.field, self.problem = str(path), field, problem
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(message or f"{where}: {problem}")


class RunFormatError(_RefusedFile, ResultsError):
    """A run directory's meta.json or records.jsonl is damaged, of an unknown (newer) format,
    or holds impossible values; nothing was written."""


class RunLockedError(ResultsError):
    """A run directory is being written by another live convbench process."""


class SuiteFormatError(_RefusedFile, SuiteError):
    """A suite TOML or benchdnn batch file is unreadable or malformed."""


class CacheFormatError(_RefusedFile, CacheError):
    """A cache file, a row of it or a cache export is damaged or of a newer format; it was
    left untouched."""


class CacheWriteError(CacheError):
    """The tuned cache cannot be written (read-only file or folder, full disk, I/O error)."""
