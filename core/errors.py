"""The nnport exception hierarchy.

Every failure a user can cause or meet (a bad model, a missing runtime, a wrong
feed, a device that cannot take a model) raises a subclass of ``NnportError``
whose message names the problem *and* what was expected, so that the CLI can
print it on one line and a program can catch it by kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class NnportError(Exception):
    """Base class of every error nnport raises on purpose."""


class PluginError(NnportError):
    """A plugin could not be imported or registered (raised only when strict)."""


class BackendUnavailable(NnportError):
    """The backend's SDK or device is missing; the message is ``probe()``'s reason."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason


class DeviceIdConflict(BackendUnavailable):
    """A backend lists a device whose id is not ``<its name>:<local id>``, or that another backend claims.

    One device id, one backend: such a backend is listed as ``broken`` (naming
    the other backend) and none of its devices is used, so that no device id
    silently resolves to the wrong runtime.
    """

    def __init__(self, backend: str, reason: str) -> None:
        NnportError.__init__(self, f"backend {backend!r} is broken: {reason}")
        self.backend = backend
        self.reason = reason


class DeviceNotFound(NnportError, LookupError):
    """A device, backend or kind name matched nothing; the message lists what exists."""


class ModelLoadError(NnportError, ValueError):
    """The model file is missing, truncated, malformed or fails ``onnx.checker``."""


class CompileError(NnportError):
    """A backend could not compile a model for a device.

    ``backend`` and ``device`` say where; the runtime's own exception is chained
    as ``__cause__`` and its text is kept in the message.
    """

    def __init__(self, message: str, *, backend: str | None = None, device: str | None = None) -> None:
        where = ", ".join(
            p for p in (f"backend {backend!r}" if backend else "", f"device {device!r}" if device else "") if p
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.backend = backend
        self.device = device


class UnsupportedModel(CompileError):
    """The backend cannot run this model (an operator, a dtype, a format, dynamic rank)."""


class UnsupportedPrecision(CompileError):
    """The device does not support the requested precision; the message lists those it does."""


class NoDeviceCouldCompile(CompileError):
    """Every candidate device failed; ``attempts`` holds (device id, error) for each."""

    def __init__(self, attempts: Sequence[tuple[str, BaseException]]) -> None:
        lines = "; ".join(f"{dev}: {err}" for dev, err in attempts) or "no candidate device"
        super().__init__(f"no device could compile the model ({lines})")
        self.attempts = list(attempts)


class InputError(NnportError, ValueError):
    """Feeds do not match the model: missing, unexpected, wrong dtype, rank or shape."""


class ExecutionError(NnportError):
    """The runtime failed while running a model whose inputs were valid."""


class DeviceLost(ExecutionError):
    """The device went away mid-call: its host died or left (a farm node), so the call has no result.

    Raised within a bounded time (``nnport.plugins.farm``); conformance records
    the case as ``lost``, not as a failure of the model.
    """


class WorkerCrashed(ExecutionError):
    """The process that held the compiled model died (segfault, abort) while its host stayed up.

    A remote worker's crash (a farm actor); conformance records it as ``crash``,
    as it does when a local worker process dies.
    """


class MeasurementError(NnportError, ValueError):
    """Measurement settings are invalid, or the measured run could not complete."""


def describe(obj: Any) -> str:
    """A short description of a feed value for error messages."""
    shape = getattr(obj, "shape", None)
    dtype = getattr(obj, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{dtype}{list(shape)}"
    return type(obj).__name__
