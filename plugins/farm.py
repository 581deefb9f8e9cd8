"""The device farm backend: every device of every node of a Ray cluster, as devices of one backend.

A farm device's id is ``farm:<node>/<backend>:<device>`` and its kind is the
remote device's kind, so selection, conformance, bench, compare and
``device="auto"`` work across hosts unchanged (``-d farm:openvino`` selects
every OpenVINO device of the farm, ``-d farm:gpu`` every GPU, ``-d farm:node1``
one node's devices).  The farm is named by ``NNPORT_FARM=<head HOST:PORT>`` (or
``nnport.farm.configure``); without it the backend is unavailable with that
reason and Ray is never imported.

How a call travels: ``compile`` takes a *lease* on the device, an actor placed
by the device's Ray custom resource (advertised by its node at ``nnport farm
join``), so it runs on the node that owns the device, with that node's nnport
and runtimes.  The actor compiles and keeps the compiled model; ``run`` and
``execute`` ship feeds and outputs through Ray; ``measure`` runs nnport's
measure *on the node*, so the network never enters the timing.  A lease holds
the device's whole resource: calls on one device are serialised, one process
at a time, so measurements do not disturb each other (like a TVM RPC tracker
session).  The lease ends when the last model compiled on it is released.

Faults, each bounded in time:

* a device no live node offers -> ``DeviceNotFound`` at once (the resource is
  checked before the actor is placed; a placement that stays pending is
  cancelled, never left waiting);
* a device held by another process's lease -> wait up to ``NNPORT_FARM_WAIT_S``
  (300 s), then ``ExecutionError``;
* the node dies mid-call -> ``DeviceLost`` (an ``ExecutionError``) once Ray
  sees the node dead or the actor unreachable for ``NNPORT_FARM_LOST_S`` (20 s);
* the actor's process dies while its node stays up (a segfault in a runtime)
  -> ``WorkerCrashed`` (an ``ExecutionError``; conformance reports ``crash``).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from nnport import farm, hookimpl
from nnport.backend import Backend
from nnport.compiled import CompiledModel
from nnport.errors import (
    BackendUnavailable,
    CompileError,
    DeviceLost,
    DeviceNotFound,
    ExecutionError,
    InputError,
    MeasurementError,
    NnportError,
    UnsupportedModel,
    UnsupportedPrecision,
    WorkerCrashed,
)
from nnport.model import Model
from nnport.types import KINDS, Binding, Capabilities, CompileOptions, Device, TensorSpec

WAIT_S = float(os.environ.get("NNPORT_FARM_WAIT_S", "300"))
LOST_S = float(os.environ.get("NNPORT_FARM_LOST_S", "20"))
POLL_S = 0.5

_ERRORS: dict[str, type[NnportError]] = {
    "UnsupportedModel": UnsupportedModel,
    "UnsupportedPrecision": UnsupportedPrecision,
    "CompileError": CompileError,
    "NoDeviceCouldCompile": CompileError,
    "InputError": InputError,
    "ExecutionError": ExecutionError,
    "MeasurementError": MeasurementError,
}


class FarmBackend(Backend):
    name = "farm"
    vendor = "Ray cluster"
    priority = -100  # within a kind, local devices come first in device="auto"
    description = "remote devices of an nnport farm (Ray), as farm:<node>/<backend>:<device>"

    @classmethod
    def probe(cls) -> str | None:
        if farm.configured_address() is None:
            return (
                f"no farm configured: set {farm.ENV_ADDRESS}=<head HOST:PORT> (a cluster started with `nnport "
                "farm join --head`)"
            )
        if importlib.util.find_spec("ray") is None:
            return "the farm needs Ray, which is not installed (pip install 'nnport[farm]')"
        return _head_answers(farm.configured_address() or "")

    def __init__(self) -> None:
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._nodes: dict[str, farm.FarmNode] = {}

    def versions(self) -> dict[str, str]:
        import ray

        found = {"ray": ray.__version__}
        for node in self._nodes.values():
            found[f"farm:{node.name}"] = ", ".join(f"{k} {v}" for k, v in sorted(node.versions.items()))
        return found

    # -- devices -------------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        nodes = farm.cluster_nodes()
        self._nodes = {n.name: n for n in nodes}
        mine = farm.local_versions(only={d["backend"] for n in nodes for d in n.devices})
        found = []
        for node in nodes:
            differ = farm.version_differences(node.versions, mine)
            for dev in node.devices:
                local_id = dev["id"]
                props = dict(dev.get("properties") or {})
                props.update(
                    node=node.name,
                    node_id=node.node_id,
                    ip=node.ip,
                    remote_id=local_id,
                    remote_backend=dev["backend"],
                    resource=farm.device_resource(node.name, local_id),
                    nnport_version=node.nnport_version,
                    omp_num_threads=node.facts.get("omp_num_threads"),
                    versions=node.versions,
                    version_differences={k: {"node": a, "here": b} for k, (a, b) in differ.items()},
                )
                kind = str(dev.get("kind")) if dev.get("kind") in KINDS else "cpu"
                found.append(
                    Device(
                        id=farm.device_id(node.name, local_id),
                        backend=self.name,
                        kind=kind,
                        name=f"{dev.get('name') or local_id} on {node.name}",
                        properties=props,
                        available=bool(dev.get("available", True)),
                        reason=dev.get("reason"),
                    )
                )
        return found

    def select(self, devices: Sequence[Device], spec: str) -> list[Device]:
        """``farm:<spec>`` beyond exact ids and kinds: a node, a backend, ``backend:kind``, a remote id,
        ``node/...``."""
        spec = spec.strip().lower()
        node, slash, rest = spec.partition("/")
        if not slash:
            node, rest = "", spec
        out = []
        for dev in devices:
            props = dev.properties
            if node and str(props.get("node", "")).lower() != node:
                continue
            if not rest and node:
                out.append(dev)
                continue
            remote_id = str(props.get("remote_id", "")).lower()
            backend = str(props.get("remote_backend", "")).lower()
            b, _, k = rest.partition(":")
            if rest in (remote_id, backend) or (not node and rest == str(props.get("node", "")).lower()):
                out.append(dev)
            elif rest in KINDS and dev.kind == rest:
                out.append(dev)
            elif k in KINDS and b == backend and dev.kind == k:
                out.append(dev)
        ranked = sorted(out, key=lambda d: KINDS.index(d.kind))
        return [d for d in ranked if d.available]

    def capabilities(self, device: Device) -> Capabilities:
        node = self._nodes.get(str(device.properties.get("node")))
        if node is not None:
            for dev in node.devices:
                caps = dev.get("capabilities")
                if dev["id"] == device.properties.get("remote_id") and isinstance(caps, dict):
                    known = {f.name for f in fields(Capabilities)}
                    given: dict[str, Any] = {
                        k: tuple(v) if isinstance(v, list) else v for k, v in caps.items() if k in known
                    }
                    return Capabilities(**given)
        return Capabilities()

    # -- compile, run, measure --------------------------------------------------------------------

    def compile(self, model: Model, device: Device, options: CompileOptions) -> CompiledModel:
        if model.format != "onnx":
            raise UnsupportedModel(
                f"the farm ships ONNX models only, not {model.format}", backend=self.name, device=device.id
            )
        lease = self._lease(device)
        try:
            answer = lease.call("compile", model.serialized(), _options_payload(options, model), what="compile")
        except BaseException:
            lease.release_if_unused()
            raise
        if "error" in answer:
            lease.release_if_unused()
            raise _remote_error(answer["error"], device, compile=True)
        remote = RemoteModel(lease, answer["handle"])
        compiled = CompiledModel(
            self,
            model,
            device,
            options,
            native=remote,
            inputs=[TensorSpec(**s) for s in answer["inputs"]],
            outputs=[TensorSpec(**s) for s in answer["outputs"]],
        )
        compiled.compile_time_s = answer.get("compile_time_s")
        compiled.cache_hit = answer.get("cache_hit")
        compiled.info.update(answer.get("info") or {})
        compiled.info["farm"] = {
            "node": device.properties.get("node"),
            "device": device.properties.get("remote_id"),
            "pid": lease.pid,
            "nnport": device.properties.get("nnport_version"),
            "versions": answer.get("versions") or {},
            "version_differences": dict(device.properties.get("version_differences") or {}),
        }
        weakref.finalize(compiled, remote.release)
        return compiled

    def _lease(self, device: Device) -> _Lease:
        with self._lock:
            lease = self._leases.get(device.id)
            if lease is None or lease.dead is not None:
                lease = self._leases[device.id] = _Lease(device)
            lease.users += 1
            return lease

    def execute(self, compiled: CompiledModel, binding: Binding) -> None:
        binding.outputs = compiled.native.run(binding.inputs)

    def run(self, compiled: CompiledModel, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return compiled.native.run(feeds)

    def measure(self, compiled: CompiledModel, binding: Binding, settings: Any) -> Any:
        from nnport.measuring import Measurement

        payload = {k: v for k, v in asdict(settings).items() if k != "progress"}
        answer = compiled.native.lease.call(
            "measure", compiled.native.handle, dict(binding.inputs), payload, what="measure"
        )
        if "error" in answer:
            raise _remote_error(answer["error"], compiled.device)
        known = {f.name for f in fields(Measurement)}
        m = Measurement(**{k: v for k, v in answer["measurement"].items() if k in known})
        m.device = compiled.device.id
        m.backend = self.name
        m.model = compiled.model.name
        m.context = {**m.context, "farm": dict(compiled.info.get("farm", {})), "remote_device": m.context.get("device")}
        m.context["device"] = compiled.device.id
        return m


class RemoteModel:
    """The driver's handle on a model compiled in a device's actor."""

    __slots__ = ("lease", "handle", "released", "__weakref__")

    def __init__(self, lease: _Lease, handle: int) -> None:
        self.lease = lease
        self.handle = handle
        self.released = False

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        answer = self.lease.call("run", self.handle, dict(feeds), what="run")
        if "error" in answer:
            raise _remote_error(answer["error"], self.lease.device)
        # Arrays read from Ray's object store are read-only views: the caller owns what run returns.
        return {k: v if v.flags.writeable else np.array(v) for k, v in answer["outputs"].items()}

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.lease.drop(self.handle)


class _Lease:
    """This process's actor on one farm device: placed by the device's resource, killed when unused."""

    def __init__(self, device: Device) -> None:
        ray = farm.connect()
        from nnport.plugins.farm import DeviceServer

        self.device = device
        self.users = 0
        self.dead: NnportError | None = None
        self.pid: int | None = None
        self.node_id = str(device.properties.get("node_id", ""))
        self._lock = threading.Lock()
        resource = str(
            device.properties.get("resource") or farm.device_resource(*farm.split_device_id(device.id) or ("?", "?"))
        )
        if resource not in ray.cluster_resources():
            raise DeviceNotFound(
                f"no live node of the farm offers {device.id} (resource {resource!r}); see `nnport farm status`"
            )
        actor_cls = ray.remote(DeviceServer)
        self.actor = actor_cls.options(
            num_cpus=0, resources={resource: 1.0}, max_restarts=0, max_task_retries=0, max_concurrency=1
        ).remote(str(device.properties.get("remote_id")), device.properties.get("omp_num_threads"))
        ref = self.actor.ready.remote()
        deadline = time.monotonic() + WAIT_S
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            if ready:
                break
            if resource not in ray.cluster_resources():
                self._kill()
                raise DeviceNotFound(
                    f"no live node of the farm offers {device.id} any more (resource {resource!r} is gone)"
                )
            if time.monotonic() > deadline:
                self._kill()
                raise ExecutionError(
                    f"farm device {device.id} stayed busy (leased by another process) for {WAIT_S:g} s "
                    "(NNPORT_FARM_WAIT_S)"
                )
        try:
            info = self._get(ref, "start")
        except BaseException:
            self._kill()
            raise
        self.pid = info.get("pid")
        self.node_id = info.get("node_id") or self.node_id

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, *args: Any, what: str) -> Any:
        if self.dead is not None:
            raise type(self.dead)(str(self.dead))
        ref = getattr(self.actor, method).remote(*args)
        try:
            return self._get(ref, what)
        except (DeviceLost, WorkerCrashed) as exc:
            self.dead = exc
            self._kill()
            raise

    def _get(self, ref: Any, what: str) -> Any:
        """``ray.get`` that ends: node death and actor death become nnport errors in bounded time."""
        import ray
        from ray import exceptions as rex

        unreachable = getattr(rex, "ActorUnavailableError", ())  # Ray >= 2.22; older Rays only say ActorDiedError
        unavailable_since: float | None = None
        last_check = time.monotonic()
        while True:
            try:
                ready, _ = ray.wait([ref], timeout=POLL_S)
                if ready:
                    value = ray.get(ref)
                    if unavailable_since is not None:  # the probe answered: the actor is back, the call is lost
                        raise ExecutionError(
                            f"farm {what} on {self.device.id} was interrupted (the device was unreachable "
                            "for a while); retry it"
                        )
                    return value
                if time.monotonic() - last_check > 2.0:  # a frozen node: Ray's health check marks it dead
                    last_check = time.monotonic()
                    if self.node_id and not farm.node_alive(self.node_id):
                        raise DeviceLost(
                            f"farm node {self.device.properties.get('node')} died during {what} on {self.device.id}"
                        )
                continue
            except unreachable as exc:
                # Unreachable: the node may be dying (then Ray says so within its health-check period),
                # or the network hiccupped.  The call is lost either way; wait for Ray's verdict, boundedly.
                unavailable_since = unavailable_since or time.monotonic()
                if self.node_id and not farm.node_alive(self.node_id):
                    raise DeviceLost(
                        f"farm node {self.device.properties.get('node')} died during {what} on "
                        f"{self.device.id}: {_first_line(exc)}"
                    ) from None
                if time.monotonic() - unavailable_since > LOST_S:
                    raise DeviceLost(
                        f"farm device {self.device.id} unreachable for {LOST_S:g} s during {what}: {_first_line(exc)}"
                    ) from None
                time.sleep(POLL_S)
                ref = self.actor.ready.remote()  # probe: a dead actor answers ActorDiedError
            except rex.ActorDiedError as exc:
                text = str(exc)
                if "node has died" in text or (self.node_id and not farm.node_alive(self.node_id)):
                    raise DeviceLost(
                        f"farm node {self.device.properties.get('node')} died during {what} on {self.device.id}"
                    ) from None
                raise WorkerCrashed(
                    f"the farm worker process for {self.device.id} (pid {self.pid} on node "
                    f"{self.device.properties.get('node')}) died during {what}: {_death_detail(text)}"
                ) from None
            except rex.RayTaskError as exc:  # a bug in the actor body itself: nnport errors come back as values
                raise ExecutionError(f"farm {what} on {self.device.id} raised {_first_line(exc)}") from None

    def drop(self, handle: int) -> None:
        with self._lock:
            self.users -= 1
            unused = self.users <= 0
        if self.dead is None and not unused:
            try:
                self.actor.release.remote(handle)
            except Exception:
                pass
        if unused:
            self._kill()

    def release_if_unused(self) -> None:
        with self._lock:
            self.users -= 1
            unused = self.users <= 0
        if unused:
            self._kill()

    def _kill(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.kill(self.actor, no_restart=True)
        except Exception:
            pass
        if self.dead is None:
            self.dead = ExecutionError(f"the lease on farm device {self.device.id} was released")


_answered: set[str] = set()


def _head_answers(address: str) -> str | None:
    """None when the farm's head accepts a TCP connection (once it has, not checked again in this process), else why
    not."""
    if address in _answered:
        return None
    import socket

    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            return f"the farm's head {address} ({farm.ENV_ADDRESS}) does not answer: {exc}"
    _answered.add(address)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _death_detail(text: str) -> str:
    for line in text.splitlines():
        if "Worker exit" in line or "died" in line:
            return line.strip()[:300]
    return text.strip().splitlines()[0][:300] if text.strip() else "no detail"


def _remote_error(error: Mapping[str, Any], device: Device, *, compile: bool = False) -> NnportError:
    kind = str(error.get("type", ""))
    message = f"on {device.id}: {error.get('message', '')}"
    if kind in ("BackendUnavailable", "DeviceIdConflict"):
        return BackendUnavailable("farm", message)
    if kind == "DeviceNotFound":
        return DeviceNotFound(message)
    cls = _ERRORS.get(kind)
    if cls is not None and issubclass(cls, CompileError):
        return cls(message, backend="farm", device=device.id)
    if cls is not None:
        return cls(message)
    text = f"{kind}: {message}" if kind else message
    return CompileError(text, backend="farm", device=device.id) if compile else ExecutionError(text)


def _options_payload(options: CompileOptions, model: Model) -> dict[str, Any]:
    calibration = options.calibration
    if (
        options.precision == "int8"
        and calibration is not None
        and not (isinstance(calibration, str) and calibration == "random")
    ):
        from nnport.calibration import calibration_feeds

        calibration = calibration_feeds(calibration, model.inputs)  # the node cannot read the driver's files
    return {
        "precision": options.precision,
        "threads": options.threads,
        "hint": options.hint,
        "extra": dict(options.extra),
        "shapes": {k: list(v) for k, v in options.shapes.items()},
        "calibration": calibration,
    }


# -- the actor body: runs on the node, with the node's nnport ----------------------------------------------


class DeviceServer:
    """One device's server in a farm node: compiles with the node's nnport, keeps the compiled models.

    Placed by ``ray.remote(DeviceServer).options(resources={device resource: 1})``;
    it imports no Ray itself.  Errors are returned as values
    (``{"error": {"type", "message"}}``), never raised, so that nnport errors
    cross versions and pickling intact.
    """

    def __init__(self, device_id: str, omp_num_threads: str | None = None) -> None:
        # Ray sets OMP_NUM_THREADS=1 in an actor without CPUs; OpenMP runtimes (ncnn) would then run on one
        # thread where a local run uses all.  Restore the node's own setting (unset: every usable core).
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(omp_num_threads or cores)
        self.device_id = device_id
        self.models: dict[int, Any] = {}
        self.counter = itertools.count(1)

    def ready(self) -> dict[str, Any]:
        node_id = ""
        try:
            import ray

            node_id = ray.get_runtime_context().get_node_id()
        except Exception:
            pass
        return {"pid": os.getpid(), "node_id": node_id, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}

    def compile(self, model_bytes: bytes, options: dict[str, Any]) -> dict[str, Any]:
        import nnport

        try:
            model = nnport.load(model_bytes)
            opts = CompileOptions(
                **{k: v for k, v in options.items() if k != "calibration"}, calibration=options.get("calibration")
            )
            start = time.perf_counter()
            compiled = nnport.compile(model, self.device_id, opts, fallback=False)
            elapsed = time.perf_counter() - start
        except Exception as exc:
            return {"error": _describe(exc)}
        handle = next(self.counter)
        self.models[handle] = compiled
        try:
            versions = dict(compiled.backend.versions())
        except Exception:
            versions = {}
        versions["nnport"] = nnport.__version__
        info = {k: v for k, v in compiled.info.items() if not k.startswith("_") and _plain(v)}
        return {
            "handle": handle,
            "inputs": [s.to_dict() for s in compiled.inputs],
            "outputs": [s.to_dict() for s in compiled.outputs],
            "compile_time_s": compiled.compile_time_s if compiled.compile_time_s is not None else elapsed,
            "cache_hit": compiled.cache_hit,
            "info": info,
            "versions": versions,
        }

    def run(self, handle: int, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        try:
            return {"outputs": self.models[handle].run(feeds)}
        except Exception as exc:
            return {"error": _describe(exc)}

    def measure(self, handle: int, inputs: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
        import nnport
        from nnport.measuring import MeasureSettings

        try:
            m = nnport.measure(self.models[handle], inputs, MeasureSettings(**settings))
        except Exception as exc:
            return {"error": _describe(exc)}
        return {"measurement": asdict(m)}

    def release(self, handle: int) -> None:
        self.models.pop(handle, None)


def _describe(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, (list, tuple, dict)) and len(repr(value)) < 4000
    )


@hookimpl
def nnport_register_backends(register):
    register(FarmBackend)
