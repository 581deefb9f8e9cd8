"""Each hook: defaults delegate, plugins can wrap or replace, None lets the next run."""

from __future__ import annotations

import numpy as np
import pytest

import nnport
from fakes import BackendPlugin, install, make_backend
from nnport import hookimpl, zoo
from nnport.data import random_feeds


@pytest.fixture
def setup():
    backend = make_backend("alpha")
    pm = install(backend)
    return pm, backend, zoo.load("mlp")


def test_hook_nnport_register_backends():
    a, b = make_backend("one"), make_backend("two")
    pm = install()
    pm.register(BackendPlugin(a, b), "pair")
    assert {"one", "two"} <= set(pm.registered_backends())
    assert pm.registered_backends()["one"].plugin == "pair"

    class NotABackend:
        pass

    pm.register(BackendPlugin(NotABackend), "wrong")
    names = set(pm.registered_backends())
    assert "one" in names  # the others still registered
    assert any(br.name == "wrong" and "Backend subclass" in br.error for br in pm.broken)


def test_duplicate_backend_name_is_listed_broken():
    pm = install(make_backend("same"))
    pm.register(BackendPlugin(make_backend("same")), "copycat")
    assert set(pm.registered_backends()) == {"same"}
    assert any(b.name == "copycat" and "already registered" in b.error for b in pm.broken)


def test_hook_nnport_compile(setup):
    pm, backend, model = setup
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def nnport_compile(self, backend, model, device, options):
            seen.append(("before", device.id))
            compiled = yield
            compiled.info["wrapped"] = True
            seen.append(("after", compiled.device.id))
            return compiled

    pm.register(Wrapper(), "wrapper")
    compiled = nnport.compile(model, "alpha")
    assert compiled.info["wrapped"] is True
    assert seen == [("before", "alpha:cpu"), ("after", "alpha:cpu")]
    assert backend.calls == ["compile:alpha:cpu"]


def test_compile_hook_returning_none_lets_default_run(setup):
    pm, backend, model = setup

    class Observer:
        @hookimpl
        def nnport_compile(self, backend, model, device, options):
            return None

    pm.register(Observer(), "observer")
    nnport.compile(model, "alpha")
    assert backend.calls == ["compile:alpha:cpu"]


def test_compile_hook_can_replace(setup):
    pm, backend, model = setup
    sentinel = {}

    class Replacer:
        @hookimpl
        def nnport_compile(self, backend, model, device, options):
            compiled = nnport.CompiledModel(backend, model, device, options, native=None)
            sentinel["c"] = compiled
            return compiled

    pm.register(Replacer(), "replacer")
    assert nnport.compile(model, "alpha") is sentinel["c"]
    assert backend.calls == []  # the backend was never asked


def test_hook_nnport_allocate(setup):
    pm, backend, model = setup
    shapes_seen = []

    class Allocator:
        @hookimpl
        def nnport_allocate(self, backend, compiled, shapes):
            shapes_seen.append(shapes)
            return nnport.Binding({"x": np.full((1, 64), 0.5, np.float32)})

    pm.register(Allocator(), "allocator")
    compiled = nnport.compile(model, "alpha")
    m = nnport.measure(compiled, settings=nnport.MeasureSettings(warmup=0, min_iterations=2, min_duration_s=0.01))
    assert m.iterations >= 2
    assert shapes_seen == [None]


def test_hook_nnport_execute(setup):
    pm, backend, model = setup
    compiled = nnport.compile(model, "alpha")
    feeds = random_feeds(compiled.inputs)
    expected = compiled.run(feeds)
    traced = []

    class Tracer:
        @hookimpl(wrapper=True)
        def nnport_execute(self, backend, compiled, binding):
            traced.append(sorted(binding.inputs))
            result = yield
            traced.append(sorted(binding.outputs))
            return result

    pm.register(Tracer(), "tracer")
    got = compiled.run(feeds)  # the same compiled model now goes through the hook
    np.testing.assert_array_equal(got["probs"], expected["probs"])
    assert traced == [["x"], ["probs"]]


def test_execute_fast_path_skips_the_hook_while_only_default_implements_it(setup):
    pm, backend, model = setup
    assert pm.only_default_executes()
    compiled = nnport.compile(model, "alpha")
    calls = []
    original = pm.hook.nnport_execute

    class Spy:
        def __getattr__(self, name):
            return getattr(original, name)

        def __call__(self, **kw):
            calls.append(kw)
            return original(**kw)

    pm.hook.nnport_execute = Spy()
    try:
        compiled.run(random_feeds(compiled.inputs))
    finally:
        pm.hook.nnport_execute = original
    assert calls == []


def test_execute_replacement_returning_none_runs_backend_again(setup):
    pm, backend, model = setup
    compiled = nnport.compile(model, "alpha")
    feeds = random_feeds(compiled.inputs)

    class Lazy:
        @hookimpl
        def nnport_execute(self, backend, compiled, binding):
            binding.outputs = {"probs": np.zeros((1, 10), np.float32)}
            return None  # "not handled": the default runs the backend too

    pm.register(Lazy(), "lazy")
    backend.calls.clear()
    out = compiled.run(feeds)
    assert backend.calls == ["execute"]
    assert out["probs"].sum() == pytest.approx(1.0, rel=1e-5)

    class Replacing:
        @hookimpl
        def nnport_execute(self, backend, compiled, binding):
            binding.outputs = {"probs": np.zeros((1, 10), np.float32)}
            return True

    pm.unregister(name="lazy")
    pm.register(Replacing(), "replacing")
    backend.calls.clear()
    out = compiled.run(feeds)
    assert backend.calls == []
    assert out["probs"].sum() == 0


def test_hook_nnport_measure(setup):
    pm, backend, model = setup
    compiled = nnport.compile(model, "alpha")

    class External:
        @hookimpl
        def nnport_measure(self, backend, compiled, binding, settings):
            return nnport.Measurement(
                device=compiled.device.id,
                backend=backend.name,
                scenario=settings.scenario,
                samples_ms=[1.0, 2.0, 3.0],
                duration_s=0.006,
            )

    settings = nnport.MeasureSettings(warmup=0, min_iterations=3, min_duration_s=0.01)
    default = nnport.measure(compiled, settings=settings)
    assert default.iterations >= 3 and "execute" in backend.calls
    pm.register(External(), "external")
    m = nnport.measure(compiled, settings=settings)
    assert m.samples_ms == [1.0, 2.0, 3.0]
