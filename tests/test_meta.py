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


def _documented_info_keys() -> set[str]:
    text = (ROOT / "specs" / "backend-contract.md").read_text()
    section = text.split("### `compiled.native` and `compiled.info`", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])}


def test_every_compiled_info_key_is_in_the_contract_spec():
    """``compiled.info`` is diagnostics, each key listed in specs/backend-contract.md (the backends installed here)."""
    import nnport
    from nnport import zoo

    documented = _documented_info_keys()
    assert {"providers", "graph_edges", "openvino_config", "tensorrt", "farm"} <= documented
    wanted = ("onnxruntime:cpu", "openvino:CPU", "ncnn:cpu")
    usable = {d.id for d in nnport.devices()}
    seen: dict[str, set[str]] = {}
    for device in [d for d in wanted if d in usable]:
        for precision in ("fp32", "fp16"):
            try:
                compiled = nnport.compile(zoo.load("mlp"), device, fallback=False, precision=precision)
            except nnport.NnportError:
                continue
            seen.setdefault(device, set()).update(compiled.info)
    assert "onnxruntime:cpu" in seen
    undocumented = {d: sorted(keys - documented) for d, keys in seen.items() if keys - documented}
    assert not undocumented, f"compiled.info keys missing from specs/backend-contract.md: {undocumented}"


def test_packaging_one_version_a_license_and_type_information():
    import importlib.metadata

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import nnport

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nnport.__version__"}
    assert importlib.metadata.version("nnport") == nnport.__version__
    assert project["project"]["license"] == "Apache-2.0" and project["project"]["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert (ROOT / "core" / "py.typed").exists() and "py.typed" in project["tool"]["setuptools"]["package-data"][
        "nnport"
    ]
    assert "Typing :: Typed" in project["project"]["classifiers"]
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert first_block.strip().splitlines()[0].startswith("bash dev.sh demo") and "bash dev.sh test" in first_block
    assert 'pip install "nnport[openvino,ncnn]"' in readme
