"""Device selection: from what the user wrote to an ordered list of candidates.

Accepted forms (like ONNX Runtime's provider list and OpenVINO's AUTO):

* a device id: ``"onnxruntime:cpu"``, ``"openvino:CPU"`` (case-insensitive);
* a backend name: ``"openvino"`` -> that backend's devices in its own order;
* a kind: ``"cpu"``, ``"gpu"``, ``"npu"`` -> devices of that kind, by priority;
* ``"backend:kind"``: ``"openvino:gpu"`` -> that backend's devices of that kind;
* ``"auto"``: every available device, npu > gpu > cpu, then backend priority;
* a list of any of these, in priority order (duplicates dropped).

One device id, one backend: every id is ``<backend name>:<local id>``.  The core
checks each backend's ``devices()`` (``check_device_ids``); a backend that lists
an id outside its own namespace (a subclass of another backend that kept its
parent's ids), a device naming another backend, or one id twice, is broken:
``nnport backends`` shows it as ``broken`` naming the backend whose namespace the
id is in, and selection uses none of its devices (``DeviceIdConflict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import BackendUnavailable, DeviceIdConflict, DeviceNotFound, NnportError
from .manager import NnportPluginManager
from .types import KINDS, Device

KIND_RANK = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class BackendStatus:
    """One row of ``nnport backends``."""

    name: str
    vendor: str
    plugin: str
    status: str  # "available" | "unavailable" | "broken"
    reason: str | None = None
    priority: int = 0
    source: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # runtime versions (read with check_devices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "plugin": self.plugin,
            "status": self.status,
            "available": self.status == "available",
            "reason": self.reason,
            "priority": self.priority,
            "source": self.source,
            "versions": dict(self.versions),
        }


def backend_statuses(pm: NnportPluginManager, *, check_devices: bool = False) -> list[BackendStatus]:
    """Every registered backend with ``probe()``'s verdict, then every broken plugin.

    With ``check_devices`` the devices of every available backend are listed
    (which imports their SDKs) so that device-id conflicts show as ``broken``
    rows; without it, only conflicts already found in this process do.
    """
    rows = []
    for name, reg in sorted(pm.registered_backends().items(), key=lambda kv: (-kv[1].cls.priority, kv[0])):
        try:
            reason = reg.cls.probe()
        except Exception as exc:  # a probe must not take the listing down
            reason = f"probe() raised {type(exc).__name__}: {exc}"
        status = "available" if reason is None else "unavailable"
        versions: dict[str, str] = {}
        if reason is None:
            conflict = _id_conflict(pm, name, check_devices)
            if conflict is not None:
                status, reason = "broken", conflict.reason
            elif check_devices:
                versions = _versions(pm, name)
        rows.append(
            BackendStatus(
                name=name,
                vendor=reg.cls.vendor,
                plugin=reg.plugin,
                status=status,
                reason=reason,
                priority=reg.cls.priority,
                source=pm.sources.get(reg.plugin, ""),
                versions=versions,
            )
        )
    for b in pm.broken:
        rows.append(
            BackendStatus(name=b.name, vendor="", plugin=b.name, status="broken", reason=b.error, source=b.source)
        )
    return rows


def _versions(pm: NnportPluginManager, name: str) -> dict[str, str]:
    """The backend's runtime versions (its SDK is imported); empty when it cannot say."""
    try:
        return {str(k): str(v) for k, v in pm.backend(name).versions().items()}
    except Exception as exc:  # a backend's versions() must not take the listing down
        return {"error": f"versions() raised {type(exc).__name__}: {exc}"}


def _id_conflict(pm: NnportPluginManager, name: str, list_devices: bool) -> DeviceIdConflict | None:
    cache: dict[str, list[Device] | BaseException] = pm.device_cache
    if list_devices and name not in cache:
        try:
            backend_devices(pm, name)
        except NnportError:
            pass
    found = cache.get(name)
    return found if isinstance(found, DeviceIdConflict) else None


def check_device_ids(pm: NnportPluginManager, name: str, devices: Sequence[Device]) -> str | None:
    """Why backend ``name``'s ``devices`` break "one device id, one backend", or None.

    Each id must be ``<name>:<local id>`` (case-insensitive, as selection
    compares ids), each device's ``backend`` must be ``name``, and no id may
    appear twice.  The reason names the other backend where the id is in its
    namespace.
    """
    backends = {n.lower(): n for n in pm.registered_backends()}
    problems: list[str] = []
    seen: set[str] = set()
    for dev in devices:
        prefix, sep, local = dev.id.partition(":")
        if prefix.lower() != name.lower() or not sep or not local:
            owner = backends.get(prefix.lower()) if sep else None
            plugin = pm.registered_backends()[owner].plugin if owner else ""
            where = (
                f": ids {owner}:... belong to backend {owner!r} (plugin {plugin!r}), so both would claim it"
                if owner and owner != name
                else ""
            )
            problems.append(f"device id {dev.id!r} is not {name}:<local id>{where}")
        if dev.backend != name:
            problems.append(f"device {dev.id!r} says backend={dev.backend!r}")
        if dev.id.lower() in seen:
            problems.append(f"device id {dev.id!r} is listed twice")
        seen.add(dev.id.lower())
    if not problems:
        return None
    return (
        "; ".join(problems)
        + " (device ids are '<backend name>:<local id>'; a backend built from another's template must build "
        "them from self.name)"
    )


def backend_devices(pm: NnportPluginManager, name: str) -> list[Device]:
    """Devices of backend ``name`` (cached per manager); raises ``BackendUnavailable``.

    Raises ``DeviceIdConflict`` (a ``BackendUnavailable``) when the backend's
    ids break "one device id, one backend" (``check_device_ids``).
    """
    cache: dict[str, list[Device] | BaseException] = pm.device_cache
    if name not in cache:
        reg = pm.registered_backends().get(name)
        if reg is None:
            raise DeviceNotFound(f"unknown backend {name!r}; registered backends: {sorted(pm.registered_backends())}")
        try:
            reason = reg.cls.probe()
            if reason is not None:
                raise BackendUnavailable(name, reason)
            listed = list(pm.backend(name).devices())
            conflict = check_device_ids(pm, name, listed)
            if conflict is not None:
                raise DeviceIdConflict(name, conflict)
            cache[name] = listed
        except BackendUnavailable as exc:
            cache[name] = exc
        except Exception as exc:
            cache[name] = BackendUnavailable(name, f"listing devices failed: {type(exc).__name__}: {exc}")
    result = cache[name]
    if isinstance(result, BaseException):
        raise result
    return result


def all_devices(pm: NnportPluginManager, include_unavailable: bool = False) -> list[Device]:
    """Devices of every usable backend, in ``auto`` order."""
    found: list[tuple[int, int, int, Device]] = []
    for name, reg in pm.registered_backends().items():
        try:
            devices = backend_devices(pm, name)
        except BackendUnavailable:
            continue
        for index, dev in enumerate(devices):
            if dev.available or include_unavailable:
                found.append((KIND_RANK[dev.kind], -reg.cls.priority, index, dev))
    found.sort(key=lambda t: (t[0], t[1], t[2], t[3].backend))
    return [t[3] for t in found]


def candidates(
    pm: NnportPluginManager,
    spec: str | Device | Sequence[str | Device],
    skipped: list[tuple[str, BaseException]] | None = None,
) -> list[Device]:
    """Resolve a device spec to an ordered, de-duplicated list of devices.

    Raises ``DeviceNotFound`` (listing what exists) or ``BackendUnavailable``
    when a single spec names nothing usable.  In a list, an entry that matches
    nothing usable is skipped as long as some other entry matches; when
    ``skipped`` is given, (entry, error) is appended to it for each such entry,
    so that ``compile`` records it among the attempts.
    """
    if isinstance(spec, (str, Device)):
        return _resolve_one(pm, spec)
    result: list[Device] = []
    errors: list[Exception] = []
    for item in spec:
        try:
            for dev in _resolve_one(pm, item):
                if dev not in result:
                    result.append(dev)
        except (DeviceNotFound, BackendUnavailable) as exc:
            errors.append(exc)
            if skipped is not None:
                skipped.append((item.id if isinstance(item, Device) else str(item), exc))
    if not result:
        if len(errors) == 1:
            raise errors[0]
        raise DeviceNotFound("no device matches " + repr(list(spec)) + ": " + "; ".join(str(e) for e in errors))
    return result


def _resolve_one(pm: NnportPluginManager, spec: str | Device) -> list[Device]:
    if isinstance(spec, Device):
        return [spec]
    if not isinstance(spec, str) or not spec.strip():
        raise DeviceNotFound(f"device must be a device id, backend name, kind or 'auto', got {spec!r}")
    text = spec.strip()
    low = text.lower()
    backends = pm.registered_backends()
    if low == "auto":
        devices = all_devices(pm)
        if not devices:
            raise DeviceNotFound("no usable device: every backend is unavailable (see `nnport backends`)")
        return devices
    if low in KIND_RANK:
        devices = [d for d in all_devices(pm) if d.kind == low]
        if not devices:
            raise DeviceNotFound(f"no available {low} device; available devices: {_ids(all_devices(pm))}")
        return devices
    if low in backends:
        devices = backend_devices(pm, low)
        usable = [d for d in devices if d.available]
        if not usable:
            reasons = "; ".join(f"{d.id}: {d.reason}" for d in devices) or "it lists no device"
            raise BackendUnavailable(low, f"no usable device ({reasons})")
        return usable
    backend, _, rest = text.partition(":")
    if backend.lower() in backends and rest:
        devices = backend_devices(pm, backend.lower())
        exact = [d for d in devices if d.id.lower() == low]
        if not exact and rest.lower() in KIND_RANK:
            exact = [d for d in devices if d.kind == rest.lower() and d.available]
        if not exact:  # a form of the backend's own, e.g. farm:openvino (every remote OpenVINO device)
            exact = list(pm.backend(backend.lower()).select(devices, rest))
        if exact:
            unusable = [d for d in exact if not d.available]
            if unusable and len(unusable) == len(exact):
                raise BackendUnavailable(backend.lower(), f"device {unusable[0].id} is unusable: {unusable[0].reason}")
            return [d for d in exact if d.available]
        raise DeviceNotFound(f"unknown device {text!r}; {backend.lower()} devices: {_ids(devices)}")
    raise DeviceNotFound(
        f"unknown device {text!r}: expected 'auto', a kind {list(KINDS)}, a backend {sorted(backends)} "
        f"or a device id; available devices: {_ids(all_devices(pm))}"
    )


def _ids(devices: Sequence[Device]) -> list[str]:
    return [d.id for d in devices]
