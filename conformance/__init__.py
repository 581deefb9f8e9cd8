"""nnport conformance suite: numerical equivalence of every backend against the reference.

Modules (see specs/conformance.md):

* ``cases``        the cases: generated single-operator models, the zoo, the onnx wheel's
                   real architectures (``op/...``, ``zoo/...``, ``model/...``);
* ``compare``      ``Comparator``: per-output tolerances, error statistics, agreement metrics;
* ``runner``       cases x devices in isolated worker processes (crash/timeout are results),
                   expected-failures files (``xfail/<backend>.toml``);
* ``worker``       the worker process;
* ``reports``      terminal matrix, JSON, JUnit XML, HTML, baseline comparison;
* ``pytest_plugin`` ``pytest --pyargs nnport.conformance --nnport-backend B``;
* ``onnx_backend`` the ONNX backend node tests through nnport, and their pass-rate table.

Commands: ``nnport conformance`` and ``nnport compare`` (``nnport.conformance.cli``).
Nothing here imports a runtime SDK at import time.
"""
