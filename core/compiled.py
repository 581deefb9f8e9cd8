"""``CompiledModel``: a model compiled for one device, ready to run.

``run`` is the hot path.  It validates feeds with a check precomputed from the
specs (a dict-keys comparison and a dtype/rank/shape test per input) and, when
no plugin but the core default implements ``nnport_execute``, calls the
backend directly, so it costs a few hundred nanoseconds over the runtime's own
call.  When a plugin wraps or replaces ``nnport_execute`` (tracing, checking),
``run`` goes through the hook with a per-thread ``Binding``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import manager as _manager
from .errors import InputError, describe
from .types import Binding, CompileOptions, Device, TensorSpec

if TYPE_CHECKING:
    from .backend import Backend
    from .model import Model


class CompiledModel:
    """Result of ``nnport.compile``: ``inputs``, ``outputs``, ``device``, ``run(feeds)``.

    Backends construct it in ``compile`` and keep their runtime object in
    ``native``.  ``attempts`` lists (device id, error) for every candidate that
    selection tried and that failed before this one succeeded.
    """

    def __init__(
        self,
        backend: Backend,
        model: Model,
        device: Device,
        options: CompileOptions,
        native: Any = None,
        *,
        inputs: Sequence[TensorSpec] | None = None,
        outputs: Sequence[TensorSpec] | None = None,
    ) -> None:
        self.backend = backend
        self.model = model
        self.device = device
        self.options = options
        self.native = native
        self.inputs: tuple[TensorSpec, ...] = tuple(inputs if inputs is not None else model.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs if outputs is not None else model.outputs)
        self.attempts: list[tuple[str, BaseException]] = []
        self.compile_time_s: float | None = None
        self.cache_hit: bool | None = None
        self.info: dict[str, Any] = {}
        self._local = threading.local()
        self._n_inputs = len(self.inputs)
        self._checks = tuple(_check_for(s) for s in self.inputs)
        self._pm_version = -1
        self._direct = True

    def pin_inputs(self, specs: Sequence[TensorSpec]) -> None:
        """Accept only feeds matching ``specs`` (same names, narrower shapes): ``shapes=`` on a dynamic runtime
        graph."""
        by_name = {s.name: s for s in specs}
        self.inputs = tuple(by_name.get(s.name, s) for s in self.inputs)
        self._checks = tuple(_check_for(s) for s in self.inputs)

    # -- running -----------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray] | None = None, **named: np.ndarray) -> dict[str, np.ndarray]:
        """Run one inference; returns ``{output name: array}`` in the model's order."""
        if feeds is None:
            feeds = named
        elif named:
            feeds = {**feeds, **named}
        self.check_feeds(feeds)
        pm = _manager.get_plugin_manager()
        if pm.version != self._pm_version:
            self._direct = pm.only_default_executes()
            self._pm_version = pm.version
        if self._direct:
            return self.backend.run(self, feeds)
        binding = self.thread_binding()
        binding.inputs = dict(feeds)
        pm.hook.nnport_execute(backend=self.backend, compiled=self, binding=binding)
        return dict(binding.outputs)

    __call__ = run

    def thread_binding(self) -> Binding:
        """This thread's binding, allocated once through ``nnport_allocate``."""
        binding: Binding | None = getattr(self._local, "binding", None)
        if binding is None:
            binding = _manager.get_plugin_manager().hook.nnport_allocate(
                backend=self.backend, compiled=self, shapes=None
            )
            if binding is None:
                raise RuntimeError(f"no nnport_allocate implementation returned a binding for {self.device.id}")
            self._local.binding = binding
        return binding

    # -- validation --------------------------------------------------------------

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise ``InputError`` unless ``feeds`` match the input specs exactly.

        The common case (right names, dtypes and shapes) costs well under a
        microsecond: fully static specs compare whole shape tuples; only specs
        with symbolic dims check their fixed axes one by one.
        """
        try:
            if len(feeds) == self._n_inputs:
                for name, dtype, shape, ndim, fixed in self._checks:
                    a = feeds[name]
                    if a.dtype is not dtype and a.dtype != dtype:
                        break
                    if shape is not None:
                        if a.shape != shape:
                            break
                    elif a.ndim != ndim or (fixed and not _fixed_dims_match(a.shape, fixed)):
                        break
                else:
                    return
        except (KeyError, AttributeError, TypeError):
            pass
        raise InputError(feed_problems(self.inputs, feeds))

    def __repr__(self) -> str:
        return f"<CompiledModel {self.model.name!r} on {self.device.id} ({self.options.precision})>"


def _check_for(spec: TensorSpec) -> tuple[str, np.dtype, tuple[int, ...] | None, int, tuple[tuple[int, int], ...]]:
    """(name, dtype, whole shape if static, rank, fixed axes) for the fast check."""
    static = tuple(d for d in spec.shape if isinstance(d, int)) if not spec.is_dynamic else None
    fixed = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int))
    return (spec.name, spec.dtype, static, len(spec.shape), fixed)


def _fixed_dims_match(shape: tuple[int, ...], fixed: tuple[tuple[int, int], ...]) -> bool:
    for axis, size in fixed:
        if shape[axis] != size:
            return False
    return True


def feed_problems(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> str:
    """One message listing every missing, unexpected, mis-typed and mis-shaped input."""
    if not isinstance(feeds, Mapping):
        return (
            f"feeds must be a mapping of input name to numpy array, got {type(feeds).__name__}; model expects "
            f"{_expected(specs)}"
        )
    by_name = {s.name: s for s in specs}
    problems: list[str] = []
    missing = [n for n in by_name if n not in feeds]
    unexpected = [n for n in feeds if n not in by_name]
    if missing:
        problems.append(f"missing input(s) {missing}")
    if unexpected:
        problems.append(f"unexpected input(s) {unexpected}")
    dims: dict[str, tuple[int, str]] = {}
    for name, value in feeds.items():
        spec = by_name.get(name)
        if spec is None:
            continue
        if not isinstance(value, np.ndarray):
            problems.append(
                f"input {name!r} is a {type(value).__name__}, expected a numpy array {spec.dtype}{list(spec.shape)}"
            )
            continue
        if value.dtype != spec.dtype:
            problems.append(f"input {name!r} has dtype {value.dtype}, expected {spec.dtype}")
        if value.ndim != len(spec.shape):
            problems.append(
                f"input {name!r} has rank {value.ndim} (shape {list(value.shape)}), expected rank "
                f"{len(spec.shape)} {list(spec.shape)}"
            )
            continue
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
            if isinstance(want, int) and want != got:
                problems.append(
                    f"input {name!r} has shape {list(value.shape)}, expected {list(spec.shape)} (axis "
                    f"{axis} must be {want})"
                )
                break
            if isinstance(want, str):
                seen = dims.setdefault(want, (got, name))
                if seen[0] != got:
                    problems.append(f"dimension {want!r} is {seen[0]} in input {seen[1]!r} but {got} in input {name!r}")
    if not problems:
        problems.append(f"feeds {{{', '.join(f'{k}: {describe(v)}' for k, v in feeds.items())}}} were rejected")
    return "; ".join(problems) + f". The model expects {_expected(specs)}"


def _expected(specs: Sequence[TensorSpec]) -> str:
    return "{" + ", ".join(str(s) for s in specs) + "}"
