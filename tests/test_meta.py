"""Meta-tests (datasette's practice): every hook is documented and tested.

Each hookspec needs a heading ``## name(arg, ...)`` in specs/hooks.md with the
spec's exact argument names, a ``test_hook_<name>`` test somewhere in tests/,
and *Called by* / *Returns* in its docstring.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnport.manager import create_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name
    for name in dir(create_plugin_manager(builtins=False, entrypoints=False, blocked=[]).hook)
    if name.startswith("nnport_")
)


def test_there_are_hooks():
    assert {"nnport_register_backends", "nnport_compile", "nnport_allocate", "nnport_execute", "nnport_measure"} <= set(
        HOOKS
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    caller = getattr(pm.hook, hook)
    argnames = caller.spec.argnames
    text = (ROOT / "specs" / "hooks.md").read_text()
    headings = dict(re.findall(r"^## (nnport_\w+)\(([^)]*)\)", text, flags=re.M))
    assert hook in headings, f"specs/hooks.md has no heading for {hook}"
    documented = tuple(a.strip() for a in headings[hook].split(",") if a.strip())
    assert documented == tuple(argnames)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", sources), f"no test_hook_{hook} in tests/"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_says_who_calls_and_what_returns(hook):
    pm = create_plugin_manager(builtins=False, entrypoints=False, blocked=[])
    doc = getattr(pm.hook, hook).spec.function.__doc__ or ""
    assert "*Called by*" in doc and "*Returns*" in doc
    for arg in getattr(pm.hook, hook).spec.argnames:
        assert f":param {arg}:" in doc, f"{hook} docstring lacks :param {arg}:"


def test_every_backend_method_is_in_the_contract_spec():
    import nnport

    text = (ROOT / "specs" / "backend-contract.md").read_text()
    methods = [m for m in vars(nnport.Backend) if not m.startswith("_") and callable(getattr(nnport.Backend, m))]
    for method in methods:
        assert f"### `{method}(" in text, f"specs/backend-contract.md does not document Backend.{method}"
