"""nnport: one contract over neural-network inference runtimes.

Compile an ONNX model on any device a plugin adapts (ONNX Runtime, OpenVINO,
ncnn, TensorRT, or a vendor's own), run it with the same API, measure it, and
check numerically that every backend agrees with the reference.

``import nnport`` imports no runtime SDK: each backend imports its own only
when one of its devices is used.
"""

from __future__ import annotations

from .api import backends, bench, compile, devices, measure
from .backend import Backend
from .compiled import CompiledModel
from .errors import (
    BackendUnavailable,
    CompileError,
    DeviceIdConflict,
    DeviceNotFound,
    ExecutionError,
    InputError,
    MeasurementError,
    ModelLoadError,
    NnportError,
    NoDeviceCouldCompile,
    PluginError,
    UnsupportedModel,
    UnsupportedPrecision,
)
from .hookspecs import hookimpl, hookspec
from .manager import get_plugin_manager
from .measuring import Measurement, MeasureSettings
from .model import Model, load
from .porting import PortCell, PortReport, port
from .types import Binding, Capabilities, CompileOptions, Device, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Binding",
    "Capabilities",
    "CompileError",
    "CompileOptions",
    "CompiledModel",
    "Device",
    "DeviceIdConflict",
    "DeviceNotFound",
    "ExecutionError",
    "InputError",
    "Measurement",
    "MeasureSettings",
    "MeasurementError",
    "Model",
    "ModelLoadError",
    "NnportError",
    "NoDeviceCouldCompile",
    "PluginError",
    "PortCell",
    "PortReport",
    "TensorSpec",
    "UnsupportedModel",
    "UnsupportedPrecision",
    "__version__",
    "backends",
    "bench",
    "compile",
    "devices",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "load",
    "measure",
    "port",
]
