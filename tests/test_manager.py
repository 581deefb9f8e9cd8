"""Plugin discovery: built-ins, blocking, NNPORT_PLUGINS, broken plugins, strict mode."""

from __future__ import annotations

import sys
import textwrap

import pytest

import nnport
from nnport.manager import DEFAULT_PLUGINS, create_plugin_manager, set_plugin_manager


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on sys.path where tests write plugin modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("nnport_test_")]:
        del sys.modules[name]


def write_module(directory, name, body):
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


GOOD = """
    import nnport
    from nnport.types import Device

    IMPORTED = True

    class Good(nnport.Backend):
        name = "{name}"
        vendor = "Test"
        def devices(self):
            return [Device(id="{name}:cpu", backend="{name}", kind="cpu")]

    @nnport.hookimpl
    def nnport_register_backends(register):
        register(Good)
"""


def test_builtin_plugins_are_listed_by_backend_name():
    set_plugin_manager(create_plugin_manager(entrypoints=False, blocked=[]))
    statuses = {b.name: b for b in nnport.backends()}
    assert set(DEFAULT_PLUGINS) <= set(statuses)
    assert statuses["onnxruntime"].status == "available"
    for name in DEFAULT_PLUGINS:
        assert statuses[name].status in ("available", "unavailable"), statuses[name]
        if statuses[name].status == "unavailable":
            assert statuses[name].reason


def test_nnport_plugins_env_loads_modules(plugin_dir, monkeypatch):
    write_module(plugin_dir, "nnport_test_good", GOOD.format(name="goodone"))
    monkeypatch.setenv("NNPORT_PLUGINS", "nnport_test_good")
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    assert "goodone" in pm.registered_backends()
    assert pm.sources["nnport_test_good"] == "NNPORT_PLUGINS"


def test_blocked_plugin_is_never_imported(plugin_dir, monkeypatch):
    write_module(plugin_dir, "nnport_test_bomb", "raise RuntimeError('imported although blocked')\n")
    monkeypatch.setenv("NNPORT_PLUGINS", "nnport_test_bomb")
    monkeypatch.setenv("NNPORT_DISABLE_PLUGINS", "nnport_test_bomb,ncnn")
    pm = create_plugin_manager(entrypoints=False)
    assert "nnport_test_bomb" not in sys.modules
    assert not pm.broken or all(b.name != "nnport_test_bomb" for b in pm.broken)
    assert "ncnn" not in pm.registered_backends()
    assert "onnxruntime" in pm.registered_backends()


def test_broken_plugin_is_listed_and_others_work(plugin_dir, monkeypatch):
    write_module(plugin_dir, "nnport_test_bomb", "raise RuntimeError('vendor SDK exploded')\n")
    write_module(plugin_dir, "nnport_test_good", GOOD.format(name="goodone"))
    monkeypatch.setenv("NNPORT_PLUGINS", "nnport_test_bomb,nnport_test_good")
    set_plugin_manager(create_plugin_manager(builtins=False, entrypoints=False, blocked=[]))
    rows = {b.name: b for b in nnport.backends()}
    assert rows["nnport_test_bomb"].status == "broken"
    assert "vendor SDK exploded" in rows["nnport_test_bomb"].reason
    assert rows["goodone"].status == "available"


def test_strict_mode_raises(plugin_dir, monkeypatch):
    write_module(plugin_dir, "nnport_test_bomb", "raise RuntimeError('vendor SDK exploded')\n")
    monkeypatch.setenv("NNPORT_PLUGINS", "nnport_test_bomb")
    monkeypatch.setenv("NNPORT_STRICT_PLUGINS", "1")
    with pytest.raises(nnport.PluginError, match="vendor SDK exploded"):
        create_plugin_manager(builtins=False, entrypoints=False, blocked=[])


def test_essential_defaults_cannot_be_blocked():
    with pytest.warns(UserWarning, match="essential"):
        pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=["defaults"])
    assert pm.has_plugin("defaults")


def test_unknown_blocked_name_warns():
    with pytest.warns(UserWarning, match="unknown plugin 'onnxrutnime'"):
        create_plugin_manager(builtins=False, entrypoints=False, blocked=["onnxrutnime"])


def test_probe_that_raises_lists_backend_unavailable(plugin_dir, monkeypatch):
    write_module(
        plugin_dir,
        "nnport_test_badprobe",
        """
        import nnport

        class BadProbe(nnport.Backend):
            name = "badprobe"
            @classmethod
            def probe(cls):
                raise OSError("driver query failed")

        @nnport.hookimpl
        def nnport_register_backends(register):
            register(BadProbe)
        """,
    )
    set_plugin_manager(
        create_plugin_manager(builtins=False, entrypoints=False, modules=["nnport_test_badprobe"], blocked=[])
    )
    row = {b.name: b for b in nnport.backends()}["badprobe"]
    assert row.status == "unavailable" and "driver query failed" in row.reason


# -- the register hooks go through pluggy (issue 19, point 4) ----------------------------------------------------


def test_register_backends_runs_through_pluggy_wrappers_and_argument_subsets(plugin_dir):
    write_module(plugin_dir, "nnport_test_good", GOOD.format(name="wrapped"))
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    import nnport_test_good

    pm.register(nnport_test_good, "wrapped")
    calls = []

    class Observer:
        @nnport.hookimpl(wrapper=True)
        def nnport_register_backends(self, register):
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    class NoArguments:
        """An implementation may take a subset of the spec's arguments (pluggy passes only those)."""

        @nnport.hookimpl
        def nnport_register_backends(self):
            calls.append("no-arguments")

    pm.register(Observer(), "observer")
    pm.register(NoArguments(), "no-arguments")
    assert "wrapped" in pm.registered_backends()
    assert calls.count("no-arguments") == 1 and calls.count("before") == calls.count("after") == 2
    assert not pm.broken


def test_register_backends_failure_stays_with_its_plugin(plugin_dir):
    write_module(plugin_dir, "nnport_test_good", GOOD.format(name="fine"))
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    import nnport_test_good

    class Raising:
        @nnport.hookimpl
        def nnport_register_backends(self, register):
            raise RuntimeError("boom")

    pm.register(nnport_test_good, "fine")
    pm.register(Raising(), "raising")
    assert "fine" in pm.registered_backends()
    assert [b.name for b in pm.broken] == ["raising"] and "boom" in pm.broken[0].error


def test_device_cache_is_public_and_cleared_when_plugins_change(plugin_dir):
    write_module(plugin_dir, "nnport_test_good", GOOD.format(name="cached"))
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    import nnport_test_good

    from nnport.selection import backend_devices

    pm.register(nnport_test_good, "cached")
    assert [d.id for d in backend_devices(pm, "cached")] == ["cached:cpu"]
    assert "cached" in pm.device_cache
    pm.unregister(name="cached")
    assert pm.device_cache == {}
    assert "__dict__" not in open(nnport.selection.__file__).read()


def test_measure_and_port_are_functions_and_their_modules_are_reachable():
    import nnport.measuring
    import nnport.porting

    assert callable(nnport.measure) and callable(nnport.port)
    assert nnport.measuring.MemoryWatch is not None and nnport.porting.PortReport is nnport.PortReport
    import importlib.util

    assert importlib.util.find_spec("nnport.measure") is None and importlib.util.find_spec("nnport.port") is None
