"""The pytest plugin: the conformance suite as pytest tests, for a vendor's CI.

Registered through the ``pytest11`` entry point ``nnport_conformance``, so
with nnport installed::

    pytest --pyargs nnport.conformance --nnport-backend myvendor

collects ``nnport/conformance/test_suite.py`` and runs every case on the
backend (a vendor's own plugin included, found through its ``nnport`` entry
point), one test per (case, device) with ids like
``test_case[op/Conv/k3_s1_p1@myvendor:npu]``.  Each test runs in a worker
process (``nnport.conformance.runner.Pool``), so a crash or hang fails that
test only.  The backend's expected-failures file (and ``--nnport-xfail``
files) turns known failures into pytest xfails; unsupported cases are skips.

Without ``--nnport-backend`` the suite collects nothing but one skipped test
saying so: the plugin only adds options to any other pytest session.

No green run without a result: a ``--nnport-backend`` that names no backend
or device, or one that is unusable here, is a usage error (pytest exits 4
with the reason) unless ``--nnport-allow-unavailable`` turns its tests into
skips; a session in which every conformance case was skipped exits 1.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

FIXTURE = "nnport_conformance_task"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("nnport", "nnport conformance suite")
    group.addoption(
        "--nnport-backend",
        action="append",
        default=[],
        metavar="B",
        help="backend or device id to run the conformance suite on (repeat)",
    )
    group.addoption(
        "--nnport-cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="case id glob or substring (repeat; default: the whole default suite)",
    )
    group.addoption(
        "--nnport-xfail", action="append", default=[], metavar="FILE.toml", help="extra expected-failures file (repeat)"
    )
    group.addoption(
        "--nnport-precision", default="fp32", choices=["fp32", "fp16", "int8"], help="precision to compile at"
    )
    group.addoption("--nnport-timeout", type=float, default=None, help="seconds per case (default: each case's own)")
    group.addoption(
        "--nnport-allow-unavailable",
        action="store_true",
        default=False,
        help="skip the tests of a --nnport-backend that is missing or unusable instead of failing with a usage error",
    )


TARGETS = pytest.StashKey[list]()
RAN = pytest.StashKey[dict]()


def _targets(config: Any) -> list:
    """The requested targets, resolved once per session; a missing or unusable one is a usage error."""
    if TARGETS not in config.stash:
        from nnport.conformance import runner

        targets = runner.resolve_targets(config.getoption("--nnport-backend"))
        missing = [t for t in targets if t.unavailable]
        if missing and not config.getoption("--nnport-allow-unavailable"):
            detail = "; ".join(f"{t.device}: {t.unavailable}" for t in missing)
            raise pytest.UsageError(
                f"--nnport-backend cannot be tested: {detail} (see `nnport backends`; "
                "--nnport-allow-unavailable skips it)"
            )
        config.stash[TARGETS] = targets
    return config.stash[TARGETS]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "slow: a slow conformance case (real models whose conversion takes > ~10 s); deselect with -m 'not slow'",
    )
    config.stash[RAN] = {"cases": 0, "ran": 0}
    if config.getoption("--nnport-backend", default=None):
        _targets(config)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    counts = session.config.stash.get(RAN, None)
    if counts and counts["cases"] and not counts["ran"] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    counts = config.stash.get(RAN, None)
    if counts and counts["cases"] and not counts["ran"]:
        terminalreporter.write_line(
            f"nnport conformance: all {counts['cases']} case(s) were skipped; nothing was tested, so the run fails",
            red=True,
        )


def pytest_generate_tests(metafunc: Any) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    config = metafunc.config
    backends = config.getoption("--nnport-backend")
    if not backends:
        metafunc.parametrize(
            FIXTURE,
            [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(reason="pass --nnport-backend B to run the nnport conformance suite"),
                    id="no-backend",
                )
            ],
        )
        return
    from nnport.conformance import cases as case_mod

    targets = _targets(config)
    selected = case_mod.select(config.getoption("--nnport-cases") or None)
    params = [
        pytest.param((case, target), id=f"{case.id}@{target.device}", marks=[pytest.mark.slow] if case.slow else [])
        for case in selected
        for target in targets
    ]
    metafunc.parametrize(FIXTURE, params)


@pytest.fixture(scope="session")
def nnport_conformance_pool() -> Any:
    """One worker process for the session, replaced after a crash or timeout."""
    from nnport.conformance.runner import Pool, worker_env

    pool = Pool(1, env=worker_env())
    yield pool
    pool.close()


def run_case(config: Any, pool: Any, case: Any, target: Any) -> None:
    """Run one case on one device and turn the result into a pytest outcome."""
    from nnport.conformance import runner

    counts = config.stash.setdefault(RAN, {"cases": 0, "ran": 0})
    counts["cases"] += 1
    if target.unavailable:
        pytest.skip(f"{target.device}: backend unavailable: {target.unavailable}")
    exp = runner.expectations_for(target.backend, config.getoption("--nnport-xfail"))
    skip = exp.skip_reason(case.id, target.device)
    if skip:
        pytest.skip(f"listed in [skip]: {skip}")
    timeout = config.getoption("--nnport-timeout") or case.timeout_s
    task = runner.Task(case.id, target.device, target.backend, timeout, config.getoption("--nnport-precision"))
    result = runner.apply_expectations(pool.run_task(task), exp)
    if result.status != "skip":
        counts["ran"] += 1
    if result.status == "skip":
        pytest.skip(result.reason)
    if result.status == "xfail":
        pytest.xfail(result.reason)
    if result.status == "xpass":
        warnings.warn(f"XPASS {case.id} on {target.device}: {result.reason}", stacklevel=1)
        return
    if result.status != "pass":
        pytest.fail(f"{result.status}: {result.reason}", pytrace=False)
