"""The conformance comparator: tolerance rule, statistics, NaN/Inf, dtypes, top-k, Polygraphy agreement."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from nnport.conformance.compare import DEFAULTS, Comparator, ToleranceError, polygraphy_verdict


def _ref(shape=(4, 16), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_identical_outputs_pass_with_zero_error():
    ref = {"y": _ref()}
    result = Comparator()(dict(ref), ref)
    assert result and result.passed
    out = result["y"]
    assert out.passed and bool(out)
    assert out.max_abs_error == 0 and out.mse == 0 and out.mismatches == 0
    assert out.cosine == pytest.approx(1.0)
    assert out.nonfinite_match and out.shape == (4, 16) and out.dtype == "float32"


def test_element_fails_only_past_both_tolerances():
    cmp = Comparator(atol=1e-3, rtol=1e-2, scale_tol=0.0)
    ref = np.array([1000.0, 1e-4, 1.0], np.float32)
    # 5.0 off at 1000: past atol, within rtol (0.5%) -> passes
    # 5e-4 off at 1e-4: past rtol (500%), within atol -> passes
    ok = ref + np.array([5.0, 5e-4, 0.0], np.float32)
    assert cmp({"y": ok}, {"y": ref})
    # 0.05 off at 1.0: past atol (1e-3) and past rtol (1e-2 * 1) -> fails, one element
    bad = ref + np.array([0.0, 0.0, 0.05], np.float32)
    result = cmp({"y": bad}, {"y": ref})
    assert not result
    assert result["y"].mismatches == 1
    assert "1 of 3 element(s)" in result["y"].reasons[0]


def test_per_output_tolerances_with_default_key():
    ref = {"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}
    got = {"a": ref["a"] + 0.1, "b": ref["b"] + 0.1}
    result = Comparator(atol={"": 1e-6, "b": 0.5}, rtol=0.0, scale_tol=0.0)(got, ref)
    assert not result["a"].passed
    assert result["b"].passed
    assert result["a"].atol == 1e-6 and result["b"].atol == 0.5


def test_unknown_output_name_in_a_tolerance_mapping_raises():
    ref = {"y": np.ones(3, np.float32)}
    with pytest.raises(ToleranceError, match="unknown output.*'yy'"):
        Comparator(atol={"yy": 1.0})(ref, ref)
    with pytest.raises(ToleranceError):
        Comparator(rtol={"": 1e-3, "nope": 1.0}).check_names(["y"])


def test_negative_or_nan_tolerance_is_rejected():
    with pytest.raises(ToleranceError):
        Comparator(atol=-1.0)
    with pytest.raises(ToleranceError):
        Comparator(rtol={"": float("nan")})
    with pytest.raises(ToleranceError):
        Comparator(precision="fp8")


def test_nan_and_inf_must_sit_at_the_same_positions():
    ref = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    assert Comparator()({"y": ref.copy()}, {"y": ref})  # matching specials count as equal
    moved = np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)
    res = Comparator()({"y": moved}, {"y": ref})["y"]
    assert not res.passed and not res.nonfinite_match
    assert any("NaN/Inf" in r for r in res.reasons)
    flipped = np.array([1.0, np.nan, -np.inf, -np.inf], np.float32)
    assert not Comparator()({"y": flipped}, {"y": ref})
    # a NaN where the reference is finite fails even with huge tolerances
    assert not Comparator(atol=1e9, rtol=1e9)({"y": np.array([np.nan], np.float32)}, {"y": np.array([0.0], np.float32)})


def test_nonfinite_mismatch_names_the_positions():
    """A runtime that turns NaN logits finite (OpenVINO on a NaN pixel) fails with where it did so."""
    ref = np.full((1, 10), np.nan, np.float32)
    ref[0, 3] = 1.0
    got = np.arange(10, dtype=np.float32).reshape(1, 10)
    reason = Comparator()({"logits": got}, {"logits": ref})["logits"].reasons[0]
    assert "reference has 9 NaN/0 Inf, output has 0 NaN/0 Inf" in reason
    assert (
        "at [0, 0] (got 0, reference nan), [0, 1] (got 1, reference nan), [0, 2]" in reason and "[0, 3]" not in reason
    )
    assert reason.endswith("(+1 more)")  # eight positions listed, then the count of the rest
    inf = Comparator()({"y": np.array([np.inf, 2.0], np.float32)}, {"y": np.array([-np.inf, 2.0], np.float32)})[
        "y"
    ].reasons[0]
    assert "at [0] (got inf, reference -inf)" in inf


def test_shape_and_dtype_must_be_equal():
    ref = {"y": _ref((2, 3))}
    res = Comparator()({"y": ref["y"].reshape(3, 2)}, ref)["y"]
    assert not res.passed and "shape" in res.reasons[0]
    res = Comparator()({"y": ref["y"].astype(np.float64)}, ref)["y"]
    assert not res.passed and "dtype float64" in res.reasons[0]
    assert Comparator(check_dtype=False)({"y": ref["y"].astype(np.float64)}, ref)


def test_integer_and_bool_outputs_must_match_exactly():
    ref = {"idx": np.array([3, 1, 4], np.int64), "mask": np.array([True, False])}
    assert Comparator(atol=10.0, rtol=10.0)(dict(ref), ref)
    res = Comparator(atol=10.0, rtol=10.0)({"idx": np.array([3, 1, 5], np.int64), "mask": ref["mask"]}, ref)
    assert not res["idx"].passed and res["mask"].passed


def test_missing_output_fails_and_extra_output_is_listed():
    ref = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    res = Comparator()({"a": ref["a"], "c": ref["a"]}, ref)
    assert not res and res.missing == ("b",) and res.unexpected == ("c",)
    assert "missing output(s) ['b']" in res.reasons()[0]


def test_minimum_passing_tolerances_are_tight():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(200).astype(np.float32)
    got = ref + rng.standard_normal(200).astype(np.float32) * 1e-2
    res = Comparator(atol=1e-6, rtol=1e-3, scale_tol=0.0)({"y": got}, {"y": ref})["y"]
    assert not res.passed
    assert Comparator(atol=res.min_atol, rtol=1e-3, scale_tol=0.0)({"y": got}, {"y": ref})
    assert not Comparator(atol=res.min_atol * 0.99, rtol=1e-3, scale_tol=0.0)({"y": got}, {"y": ref})
    assert Comparator(atol=1e-6, rtol=res.min_rtol, scale_tol=0.0)({"y": got}, {"y": ref})
    assert not Comparator(atol=1e-6, rtol=res.min_rtol * 0.99, scale_tol=0.0)({"y": got}, {"y": ref})


def test_statistics_are_computed_in_float64():
    ref = np.array([1.0, 2.0, -4.0], np.float32)
    got = np.array([1.5, 2.0, -3.0], np.float32)
    res = Comparator()({"y": got}, {"y": ref})["y"]
    assert res.max_abs_error == pytest.approx(1.0)
    assert res.max_rel_error == pytest.approx(0.5)
    assert res.mean_abs_error == pytest.approx(0.5)
    assert res.mse == pytest.approx((0.25 + 0 + 1) / 3)
    expected_cos = float(np.dot(got, ref) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert res.cosine == pytest.approx(expected_cos)


def test_scale_tolerance_judges_near_zero_elements_against_the_output_range():
    ref = np.array([100.0, 1e-6, -50.0], np.float32)
    got = ref + np.array([0.0, 2e-3, 0.0], np.float32)  # rounding-sized error at a near-zero element
    assert not Comparator(atol=1e-5, rtol=1e-3, scale_tol=0.0)({"y": got}, {"y": ref})
    res = Comparator(atol=1e-5, rtol=1e-3, scale_tol=1e-4)({"y": got}, {"y": ref})["y"]
    assert res.passed and res.atol_effective == pytest.approx(1e-2) and res.ref_scale == pytest.approx(100.0)


def test_topk_agreement_for_classifier_outputs():
    ref = np.tile(np.arange(10, dtype=np.float32), (2, 1))  # argmax 9, top5 {5..9}
    got = ref.copy()
    got[1, 0] = 100.0  # row 1 now says class 0
    res = Comparator(atol=1e9, rtol=1e9)({"p": got}, {"p": ref})["p"]
    assert res.top1_agreement == pytest.approx(0.5)
    assert res.k == 5 and res.topk_overlap == pytest.approx((1 + 4 / 5) / 2)
    assert res.passed  # no top-1 gate at fp32
    assert not Comparator(atol=1e9, rtol=1e9, min_top1=1.0)({"p": got}, {"p": ref})
    # [N, C, 1, 1] (squeezenet's output) counts as a classifier too; feature maps do not
    assert Comparator()({"p": ref.reshape(2, 10, 1, 1)}, {"p": ref.reshape(2, 10, 1, 1)})["p"].top1_agreement == 1.0
    assert (
        Comparator()({"f": np.ones((1, 3, 8, 8), np.float32)}, {"f": np.ones((1, 3, 8, 8), np.float32)})[
            "f"
        ].top1_agreement
        is None
    )


def test_int8_is_judged_on_agreement_not_elements():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((1, 100)).astype(np.float32) * 3
    ref[0, 7] = 20.0
    noisy = ref + rng.standard_normal((1, 100)).astype(np.float32) * 0.1  # far past fp32 tolerances
    assert not Comparator(precision="fp32")({"logits": noisy}, {"logits": ref})
    res = Comparator(precision="int8")({"logits": noisy}, {"logits": ref})["logits"]
    assert res.passed and res.cosine > DEFAULTS["int8"]["min_cosine"]
    flipped = noisy.copy()
    flipped[0, 3] = 30.0
    res = Comparator(precision="int8")({"logits": flipped}, {"logits": ref})["logits"]
    assert not res.passed and any("top-1" in r for r in res.reasons)
    garbage = rng.standard_normal((1, 100)).astype(np.float32)
    assert not Comparator(precision="int8")({"logits": garbage}, {"logits": ref})


def test_fp16_defaults_are_looser_than_fp32():
    assert DEFAULTS["fp16"]["rtol"] > DEFAULTS["fp32"]["rtol"] and DEFAULTS["fp16"]["atol"] > DEFAULTS["fp32"]["atol"]
    ref = _ref((8, 32))
    half = ref.astype(np.float16).astype(np.float32)  # fp16 rounding: ~5e-4 relative
    assert not Comparator(precision="fp32", scale_tol=0.0)({"y": half}, {"y": ref})
    assert Comparator(precision="fp16")({"y": half}, {"y": ref})


def test_results_are_frozen():
    ref = {"y": _ref()}
    res = Comparator()(dict(ref), ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res["y"].passed = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.passed = False  # type: ignore[misc]


def test_sum_rule_is_numpy_allclose():
    rng = np.random.default_rng(5)
    for trial in range(40):
        ref = rng.standard_normal(50).astype(np.float32)
        got = (ref + rng.standard_normal(50) * 10 ** rng.uniform(-8, -1)).astype(np.float32)
        ours = Comparator(atol=1e-5, rtol=1e-3, scale_tol=0.0, rule="sum")({"y": got}, {"y": ref}).passed
        assert ours == bool(np.allclose(got, ref, rtol=1e-3, atol=1e-5)), trial


def test_verdicts_agree_with_polygraphy_elemwise():
    pytest.importorskip("polygraphy")
    rng = np.random.default_rng(7)
    seen = set()
    for trial in range(30):
        ref = {
            "a": rng.standard_normal((3, 20)).astype(np.float32),
            "b": (rng.standard_normal(40) * 100).astype(np.float32),
        }
        scale = 10 ** rng.uniform(-7, -1)
        got = {
            k: (v + rng.standard_normal(v.shape) * scale * (1 + np.abs(v))).astype(np.float32) for k, v in ref.items()
        }
        atol, rtol = 10 ** rng.uniform(-6, -2), 10 ** rng.uniform(-5, -2)
        ours = Comparator(atol=atol, rtol=rtol, scale_tol=0.0)(got, ref)
        theirs = polygraphy_verdict(got, ref, atol, rtol)
        assert {k: ours[k].passed for k in ref} == theirs, (trial, atol, rtol)
        seen.update(theirs.values())
    assert seen == {True, False}  # both verdicts were exercised


def test_to_dict_is_json_safe():
    import json

    ref = {"y": np.array([1.0, np.inf], np.float32)}
    got = {"y": np.array([1.0, np.nan], np.float32)}
    doc = Comparator()(got, ref).to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert '"passed": false' in text
    assert math.isfinite(doc["outputs"][0]["max_abs_error"])


def test_expectations_can_name_one_device():
    from nnport.conformance.runner import Expectations

    exp = Expectations(xfail={"op/Gelu/*@ncnn:vulkan:*": "shader approximation", "op/Split/x": "everywhere"})
    assert exp.xfail_reason("op/Gelu/a", "ncnn:vulkan:0") == "shader approximation"
    assert exp.xfail_reason("op/Gelu/a", "ncnn:cpu") is None
    assert exp.xfail_reason("op/Gelu/a") is None
    assert exp.xfail_reason("op/Split/x", "ncnn:vulkan:0") == "everywhere"


# -- tolerances are what the caller says (issue 13, item 3) ---------------------------------------


def _near(seed=11, rel=1e-6):
    """A reference and an output off by ``rel`` of the output's range: inside fp32's default scale_tol."""
    ref = np.random.default_rng(seed).standard_normal((4, 32)).astype(np.float32) * 10
    got = (ref.astype(np.float64) + rel * np.abs(ref).max() * np.sign(ref)).astype(np.float32)
    return {"y": got}, {"y": ref}


def test_given_atol_and_rtol_are_exactly_what_is_checked():
    got, ref = _near()
    assert Comparator()(got, ref), "the fp32 defaults (scale_tol included) accept a 1e-6-of-range error"
    res = Comparator(atol=1e-12, rtol=1e-12)(got, ref)["y"]
    assert not res.passed and res.mismatches == res.elements
    assert res.atol_effective == 1e-12 and res.rtol == 1e-12 and res.scale_tol == 0.0
    assert res.given == ("atol", "rtol") and res.tolerance_text() == "atol=1e-12 rtol=1e-12 (given)"
    assert "exceed atol=1e-12 and rtol=1e-12" in res.reasons[0]


def test_defaults_apply_only_where_nothing_was_given():
    got, ref = _near()
    d = DEFAULTS["fp32"]
    res = Comparator()(got, ref)["y"]
    assert res.given == () and (res.atol, res.rtol, res.scale_tol) == (d["atol"], d["rtol"], d["scale_tol"])
    assert res.atol_effective == pytest.approx(d["scale_tol"] * res.ref_scale)
    assert res.tolerance_text().endswith("(fp32 defaults)") and "scale_tol 5e-05 x max|ref|" in res.tolerance_text()
    # atol given alone: no default scale_tol floor under it, rtol keeps its default
    only_atol = Comparator(atol=1e-9)(got, ref)["y"]
    assert only_atol.atol_effective == 1e-9 and only_atol.rtol == d["rtol"] and only_atol.scale_tol == 0.0
    assert "(atol given; rtol fp32 default)" in only_atol.tolerance_text()
    # a given scale_tol is kept beside a given atol
    both = Comparator(atol=1e-9, rtol=0.0, scale_tol=1e-3)(got, ref)["y"]
    assert both.passed and both.atol_effective == pytest.approx(1e-3 * both.ref_scale)
    # scale_tol given alone: atol and rtol are the precision's
    floor = Comparator(scale_tol=0.0)(got, ref)["y"]
    assert (floor.atol, floor.rtol, floor.scale_tol) == (d["atol"], d["rtol"], 0.0)


def test_given_tolerance_is_per_output():
    got, ref = _near()
    got2 = {"a": got["y"], "b": got["y"]}
    ref2 = {"a": ref["y"], "b": ref["y"]}
    res = Comparator(atol={"a": 1e-12}, rtol={"a": 1e-12})(got2, ref2)
    assert not res["a"].passed and res["a"].given == ("atol", "rtol")
    assert res["b"].passed and res["b"].given == () and res["b"].scale_tol == DEFAULTS["fp32"]["scale_tol"]


def test_a_given_int8_atol_is_checked_not_swallowed_by_the_infinite_default():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((1, 100)).astype(np.float32) * 3
    noisy = ref + rng.standard_normal((1, 100)).astype(np.float32) * 0.05
    assert Comparator(precision="int8")({"l": noisy}, {"l": ref})  # agreement only
    res = Comparator(precision="int8", atol=1e-3)({"l": noisy}, {"l": ref})["l"]
    assert not res.passed and res.rtol == 0.0 and res.atol_effective == 1e-3
    assert Comparator(precision="int8", atol=1.0)({"l": noisy}, {"l": ref})
    text = Comparator(precision="int8")({"l": noisy}, {"l": ref})["l"].tolerance_text()
    assert text.startswith("no element check cosine>=0.98") and text.endswith("(int8 defaults)")


def test_effective_tolerance_is_in_the_json_form():
    got, ref = _near()
    doc = Comparator(atol=1e-12, rtol=1e-12)(got, ref).to_dict()["outputs"][0]
    assert (
        doc["tolerance"] == "atol=1e-12 rtol=1e-12 (given)"
        and doc["given"] == ["atol", "rtol"]
        and doc["scale_tol"] == 0.0
    )
    assert doc["atol_effective"] == 1e-12
