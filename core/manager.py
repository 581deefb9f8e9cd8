"""Plugin manager and discovery: built-ins, entry points, environment variables.

Order of loading (as pytest does it):

1. ``NNPORT_DISABLE_PLUGINS=a,b`` names are blocked first, so a blocked plugin
   is never imported; the essential ``defaults`` plugin cannot be blocked.
2. Built-in plugins from ``DEFAULT_PLUGINS`` (one per runtime).
3. Third-party plugins from the ``nnport`` entry-point group, unless
   ``NNPORT_DISABLE_PLUGIN_AUTOLOAD=1``.
4. Modules named in ``NNPORT_PLUGINS=mod1,mod2`` (loaded even without autoload).

Each plugin loads in its own ``try``: one that fails to import or to register
is recorded in ``broken`` with its error and the rest keep working
(``NNPORT_STRICT_PLUGINS=1`` re-raises instead).  One name per plugin: the
entry-point name, the backend name, the name listed and the name blocked.

Named ``manager`` (not ``plugins``) because ``nnport.plugins`` is the package
holding the built-in runtime plugins.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .backend import Backend
from .errors import PluginError

log = logging.getLogger("nnport")
log.addHandler(logging.NullHandler())

ENTRY_POINT_GROUP = "nnport"
ESSENTIAL_PLUGINS = {"defaults": "nnport.defaults", "energy": "nnport.energy"}
DEFAULT_PLUGINS = {
    "onnxruntime": "nnport.plugins.onnxruntime",
    "openvino": "nnport.plugins.openvino",
    "ncnn": "nnport.plugins.ncnn",
    "mnn": "nnport.plugins.mnn",
    "tensorrt": "nnport.plugins.tensorrt",
    "litert": "nnport.plugins.litert",
    # remote devices of a Ray cluster; unavailable (no Ray import) unless NNPORT_FARM is set
    "farm": "nnport.plugins.farm",
}


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded or could not register, with why."""

    name: str
    source: str
    error: str


@dataclass(frozen=True)
class RegisteredBackend:
    cls: type[Backend]
    plugin: str


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class NnportPluginManager(pluggy.PluginManager):
    """pluggy's manager plus nnport's registry of backends and broken plugins.

    ``version`` changes whenever a plugin is (un)registered, so that
    ``CompiledModel.run`` can cache whether it may bypass the execute hook.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.version = 0
        self.broken: list[BrokenPlugin] = []
        self.sources: dict[str, str] = {}
        self._backends: dict[str, RegisteredBackend] | None = None
        self._instances: dict[str, Backend] = {}
        self.device_cache: dict[str, Any] = {}
        """Devices (or the exception listing them raised) per backend name, filled by ``nnport.selection``;
        cleared whenever a plugin is (un)registered."""
        self._lock = threading.RLock()

    # -- bookkeeping ----------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        self._changed()
        return result

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._changed()
        return result

    def _changed(self) -> None:
        self.version += 1
        self._backends = None
        self.device_cache.clear()

    def per_plugin(self, hook_name: str) -> Iterator[tuple[str, pluggy.HookCaller]]:
        """(plugin name, hook caller) for each plugin implementing ``hook_name``, in registration order.

        Each caller is the real hook (``pm.hook.<name>``) restricted to that one plugin's implementation,
        with every wrapper still around it: pluggy passes the arguments the implementation asks for and
        runs the wrappers, and one plugin that raises is told apart from the others.  The register hooks
        (``nnport_register_backends``, ``nnport_energy_meters``) are called this way.
        """
        caller: pluggy.HookCaller = getattr(self.hook, hook_name)
        impls = [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        for impl in impls:
            others = [i.plugin for i in impls if i.plugin is not impl.plugin]
            yield impl.plugin_name, self.subset_hook_caller(hook_name, remove_plugins=others)

    def only_default_executes(self) -> bool:
        """True when no plugin but the core default implements ``nnport_execute``."""
        impls = self.hook.nnport_execute.get_hookimpls()
        return len(impls) == 1 and impls[0].plugin_name == "defaults"

    # -- loading --------------------------------------------------------------------

    def load_module(self, name: str, module_name: str, source: str) -> None:
        """Import ``module_name`` and register it as plugin ``name``; record failure."""
        if self.is_blocked(name) or self.has_plugin(name):
            return
        try:
            module = importlib.import_module(module_name)
            self.register(module, name)
            self.sources[name] = source
        except Exception as exc:
            self._broken(name, source, exc)

    def load_entrypoints(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            source = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
            try:
                self.register(ep.load(), ep.name)
                self.sources[ep.name] = source
            except Exception as exc:
                self._broken(ep.name, source, exc)

    def _broken(self, name: str, source: str, exc: BaseException) -> None:
        if _truthy("NNPORT_STRICT_PLUGINS"):
            raise PluginError(f"plugin {name!r} ({source}) failed: {type(exc).__name__}: {exc}") from exc
        self.broken.append(BrokenPlugin(name, source, f"{type(exc).__name__}: {exc}"))
        log.warning("nnport plugin %r (%s) is broken: %s", name, source, exc)

    # -- backends ---------------------------------------------------------------------

    def registered_backends(self) -> dict[str, RegisteredBackend]:
        """Backend classes by name, collecting ``nnport_register_backends`` per plugin."""
        with self._lock:
            if self._backends is not None:
                return self._backends
            found: dict[str, RegisteredBackend] = {}
            for plugin, call in self.per_plugin("nnport_register_backends"):
                collected: list[type[Backend]] = []

                def register(cls: type[Backend], _collected: list[type[Backend]] = collected) -> None:
                    if not (isinstance(cls, type) and issubclass(cls, Backend)):
                        raise TypeError(f"register() expects a nnport.Backend subclass, got {cls!r}")
                    if not cls.name:
                        raise TypeError(f"backend class {cls.__name__} has no name")
                    if ":" in cls.name or cls.name != cls.name.strip():
                        raise TypeError(
                            f"backend name {cls.name!r} of {cls.__name__} cannot be a device id prefix (no "
                            "':' or spaces)"
                        )
                    _collected.append(cls)

                try:
                    call(register=register)
                except Exception as exc:
                    self._broken(plugin, self.sources.get(plugin, "plugin"), exc)
                    continue
                for cls in collected:
                    # Names are compared as selection compares device ids: case-insensitively.
                    same = next((n for n in found if n.lower() == cls.name.lower()), None)
                    if same is not None:
                        other = found[same].plugin
                        self._broken(
                            plugin,
                            self.sources.get(plugin, "plugin"),
                            PluginError(
                                f"backend name {cls.name!r} already registered by plugin {other!r} (as {same!r})"
                            ),
                        )
                        continue
                    found[cls.name] = RegisteredBackend(cls, plugin)
            self._backends = found
            return found

    def backend(self, name: str) -> Backend:
        """The (single, lazily created) instance of backend ``name``."""
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                reg = self.registered_backends().get(name)
                if reg is None:
                    from .errors import DeviceNotFound

                    known = sorted(self.registered_backends())
                    raise DeviceNotFound(f"unknown backend {name!r}; registered backends: {known}")
                inst = self._instances[name] = reg.cls()
            return inst


def create_plugin_manager(
    *,
    builtins: bool = True,
    entrypoints: bool | None = None,
    modules: Iterable[str] = (),
    blocked: Iterable[str] | None = None,
) -> NnportPluginManager:
    """A manager with plugins discovered as the module docstring describes.

    Arguments default to the environment; tests pass them explicitly.
    """
    pm = NnportPluginManager()
    blocked = list(blocked) if blocked is not None else _env_list("NNPORT_DISABLE_PLUGINS")
    modules = list(modules)
    known = set(DEFAULT_PLUGINS) | set(ESSENTIAL_PLUGINS) | set(modules) | set(_env_list("NNPORT_PLUGINS"))
    for name in blocked:
        if name in ESSENTIAL_PLUGINS:
            warnings.warn(f"nnport plugin {name!r} is essential and cannot be disabled", stacklevel=2)
            continue
        pm.set_blocked(name)
    for name, module in ESSENTIAL_PLUGINS.items():
        pm.register(importlib.import_module(module), name)
        pm.sources[name] = "essential"
    if builtins:
        for name, module in DEFAULT_PLUGINS.items():
            pm.load_module(name, module, "built-in")
    if entrypoints is None:
        entrypoints = not _truthy("NNPORT_DISABLE_PLUGIN_AUTOLOAD")
    if entrypoints:
        pm.load_entrypoints()
    for module in modules + _env_list("NNPORT_PLUGINS"):
        pm.load_module(module, module, "NNPORT_PLUGINS" if module not in modules else "argument")
    unknown = [n for n in blocked if n not in known and not _entrypoint_exists(n)]
    for name in unknown:
        warnings.warn(f"NNPORT_DISABLE_PLUGINS names unknown plugin {name!r}; known: {sorted(known)}", stacklevel=2)
    return pm


def _entrypoint_exists(name: str) -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == name for ep in entry_points(group=ENTRY_POINT_GROUP))


_manager: NnportPluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> NnportPluginManager:
    """The process-wide manager, created on first use."""
    global _manager
    pm = _manager
    if pm is None:
        with _manager_lock:
            if _manager is None:
                _manager = create_plugin_manager()
            pm = _manager
    return pm


def set_plugin_manager(pm: NnportPluginManager | None) -> NnportPluginManager | None:
    """Install ``pm`` as the process-wide manager (None: rediscover on next use); returns the old one."""
    global _manager
    with _manager_lock:
        old, _manager = _manager, pm
    return old
