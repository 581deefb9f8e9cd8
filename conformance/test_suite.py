"""The conformance suite as pytest tests: ``pytest --pyargs nnport.conformance --nnport-backend B``.

Parametrized by ``nnport.conformance.pytest_plugin`` (one test per case and
device); see that module.
"""

from __future__ import annotations

from typing import Any


def test_case(request: Any, nnport_conformance_task: Any, nnport_conformance_pool: Any) -> None:
    from nnport.conformance.pytest_plugin import run_case

    case, target = nnport_conformance_task
    run_case(request.config, nnport_conformance_pool, case, target)
