"""Comparing a backend's outputs with the reference's: configure once, call per run.

The rule is Polygraphy's ``CompareFunc.simple(check_error_stat="elemwise")``
(``polygraphy/comparator/compare.py``): an element fails only where its
absolute error exceeds ``atol`` *and* its relative error (against the
reference) exceeds ``rtol``.  Two additions make the verdict meaningful for
neural-network outputs (see specs/conformance.md):

* ``scale_tol``: the absolute tolerance is at least ``scale_tol`` times the
  reference's largest finite magnitude (a *default* floor: see below).  A float32 dot product of n terms
  carries rounding error proportional to the size of its terms, not of its
  result, so an output element that happens to be near zero says nothing
  with a relative error; judging it against the output's range (Polygraphy's
  ``--val-range`` idea, turned around) does.
* agreement metrics: cosine similarity, and top-k agreement for classifier
  outputs (rank 2, ``[batch, classes]``, or ``[batch, classes, 1, 1]``).
  ``min_cosine``/``min_top1`` gate the verdict where set: int8 results are
  judged on them, not element by element.

Tolerances are what the caller says.  Per output, the precision's defaults
(``DEFAULTS``: atol, rtol and the ``scale_tol`` floor) apply only where no
tolerance was given.  A given ``atol`` is the absolute tolerance, never raised
by the default ``scale_tol`` (give ``scale_tol`` too to keep a floor); an
unspecified partner of a given tolerance keeps its precision default, except
that int8's "no element check" (inf) becomes 0, so that a given int8 ``atol``
is checked.  Every ``OutputResult`` carries the tolerances it was judged with
and which of them were given (``tolerance_text()`` says it in one line).

NaN and +/-Inf must sit at the same positions with the same signs; matching
ones count as equal.  Shapes and dtypes must be equal.  Integer and boolean
outputs must match exactly.  Outputs are matched by exact name; a name in a
tolerance mapping that no output has raises ``ToleranceError`` (a typo must
not silently loosen nothing).

The result objects are frozen; ``OutputResult`` and ``Comparison`` are truthy
when they pass, as Polygraphy's ``OutputCompareResult`` is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nnport.errors import NnportError

Tol = float | Mapping[str, float]

# Per-precision defaults; the reasoning is in specs/conformance.md.
DEFAULTS: dict[str, dict[str, Any]] = {
    "fp32": {"atol": 1e-5, "rtol": 1e-4, "scale_tol": 5e-5, "min_cosine": None, "min_top1": None},
    "fp16": {"atol": 1e-3, "rtol": 1e-2, "scale_tol": 1e-2, "min_cosine": 0.999, "min_top1": None},
    "int8": {"atol": math.inf, "rtol": math.inf, "scale_tol": 0.0, "min_cosine": 0.98, "min_top1": 1.0},
}


class ToleranceError(NnportError, ValueError):
    """A tolerance mapping names an output the model does not have, or a value is invalid."""


@dataclass(frozen=True)
class OutputResult:
    """How one output compares with the reference (all errors in float64)."""

    name: str
    passed: bool
    reasons: tuple[str, ...]
    shape: tuple[int, ...] | None
    ref_shape: tuple[int, ...]
    dtype: str | None
    ref_dtype: str
    atol: float
    rtol: float
    atol_effective: float
    max_abs_error: float = math.nan
    max_rel_error: float = math.nan
    mean_abs_error: float = math.nan
    mse: float = math.nan
    cosine: float = math.nan
    ref_scale: float = math.nan
    mismatches: int = 0
    elements: int = 0
    nonfinite_match: bool = True
    min_atol: float = math.nan
    """Smallest ``atol`` that would pass with this ``rtol`` (Polygraphy's "minimum required tolerance")."""
    min_rtol: float = math.nan
    """Smallest ``rtol`` that would pass with this effective ``atol``."""
    top1_agreement: float | None = None
    topk_overlap: float | None = None
    k: int | None = None
    scale_tol: float = 0.0
    """The ``scale_tol`` judged with (0 when ``atol`` was given without one)."""
    min_cosine: float | None = None
    min_top1: float | None = None
    precision: str = "fp32"
    given: tuple[str, ...] = ()
    """Which of atol, rtol, scale_tol the caller gave for this output; the rest are ``precision``'s defaults."""
    exact: bool = False
    """Integer/boolean output: must match exactly, whatever the tolerances."""

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tolerance"] = self.tolerance_text()
        return {k: _json_float(v) for k, v in d.items()}

    def tolerance_text(self) -> str:
        """The effective tolerance in one line, e.g. ``atol=1e-12 rtol=1e-12 (given)``."""
        if self.exact:
            return "exact (integer/boolean output)"
        if math.isinf(self.atol) and math.isinf(self.rtol):
            text = "no element check"
        else:
            text = f"atol={self.atol_effective:.3g}"
            if self.scale_tol and self.atol_effective > self.atol:
                text += f" (scale_tol {self.scale_tol:g} x max|ref| {self.ref_scale:.3g})"
            elif self.scale_tol:
                text += f" (scale_tol {self.scale_tol:g})"
            text += f" rtol={self.rtol:.3g}"
        if self.min_cosine is not None:
            text += f" cosine>={self.min_cosine:g}"
        if self.min_top1 is not None and self.top1_agreement is not None:
            text += f" top1>={self.min_top1:g}"
        if not self.given:
            return text + f" ({self.precision} defaults)"
        # Defaults that still apply beside what was given (module docstring).
        d = DEFAULTS.get(self.precision, {})
        defaults = [t for t in ("atol", "rtol") if t not in self.given and math.isfinite(float(d.get(t, math.inf)))]
        if "scale_tol" not in self.given and "atol" not in self.given and d.get("scale_tol"):
            defaults.append("scale_tol")
        if not defaults:
            return text + " (given)"
        return text + f" ({', '.join(self.given)} given; {', '.join(defaults)} {self.precision} default)"

    def summary(self) -> str:
        if self.shape is None:
            return f"{self.name}: {'; '.join(self.reasons)}"
        text = (
            f"{self.name}: max_abs={self.max_abs_error:.3g} max_rel={self.max_rel_error:.3g} mse={self.mse:.3g} "
            f"cos={self.cosine:.6f} mismatches={self.mismatches}/{self.elements} "
            f"({self.tolerance_text()}; needs atol>={self.min_atol:.3g} or rtol>={self.min_rtol:.3g})"
        )
        if self.top1_agreement is not None:
            text += f" top1={self.top1_agreement:.3g} top{self.k}={self.topk_overlap:.3g}"
        if self.reasons:
            text += " -- " + "; ".join(self.reasons)
        return text


@dataclass(frozen=True)
class Comparison:
    """Every output of one run against the reference; truthy when all pass."""

    outputs: tuple[OutputResult, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        ok = not self.missing and all(o.passed for o in self.outputs)
        object.__setattr__(self, "passed", ok)

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, name: str) -> OutputResult:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def reasons(self) -> list[str]:
        found = [f"missing output(s) {list(self.missing)}"] if self.missing else []
        found += [f"{o.name}: {r}" for o in self.outputs for r in o.reasons]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "outputs": [o.to_dict() for o in self.outputs],
        }


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, tuple):
        return list(v)
    return v


def _per_output(value: Any, name: str, fallback: Any) -> Any:
    if value is None:
        return fallback
    if isinstance(value, Mapping):
        return value.get(name, value.get("", fallback))
    return value


@dataclass(frozen=True)
class Tolerance:
    """The tolerances one output is judged with, and which of them the caller gave."""

    atol: float
    rtol: float
    scale_tol: float
    min_cosine: float | None
    min_top1: float | None
    given: tuple[str, ...]


class Comparator:
    """Configured once (tolerances, agreement thresholds), called once per run.

    Every tolerance argument is a float or a mapping ``{output name: value}``
    with ``""`` as the default key (Polygraphy's convention).  ``precision``
    picks the defaults of unspecified arguments from ``DEFAULTS``, per output
    and only where no tolerance was given (module docstring; ``tolerance()``).
    ``rule="sum"`` switches to ``numpy.allclose``'s ``|d| <= atol + rtol*|ref|``
    (used by the ONNX backend node tests, whose tolerances assume it).
    """

    def __init__(
        self,
        atol: Tol | None = None,
        rtol: Tol | None = None,
        *,
        precision: str = "fp32",
        scale_tol: Tol | None = None,
        min_cosine: Tol | None = None,
        min_top1: Tol | None = None,
        top_k: int = 5,
        classifier: bool | Mapping[str, bool] | None = None,
        check_dtype: bool = True,
        rule: str = "both",
    ) -> None:
        if precision not in DEFAULTS:
            raise ToleranceError(f"precision must be one of {list(DEFAULTS)}, got {precision!r}")
        if rule not in ("both", "sum"):
            raise ToleranceError(f"rule must be 'both' or 'sum', got {rule!r}")
        d = DEFAULTS[precision]
        self.precision = precision
        # What the caller gave (None: nothing); defaults are resolved per output in tolerance().
        self.atol = atol
        self.rtol = rtol
        self.scale_tol = scale_tol
        self.min_cosine = d["min_cosine"] if min_cosine is None else min_cosine
        self.min_top1 = d["min_top1"] if min_top1 is None else min_top1
        self.top_k = int(top_k)
        self.classifier = classifier
        self.check_dtype = check_dtype
        self.rule = rule
        for label, value in (("atol", self.atol), ("rtol", self.rtol), ("scale_tol", self.scale_tol)):
            if value is None:
                continue
            values = value.values() if isinstance(value, Mapping) else [value]
            for v in values:
                if v is None or float(v) < 0 or math.isnan(float(v)):
                    raise ToleranceError(f"{label} must be a non-negative number, got {v!r}")

    def _mappings(self) -> list[tuple[str, Mapping[str, Any]]]:
        named = [
            ("atol", self.atol),
            ("rtol", self.rtol),
            ("scale_tol", self.scale_tol),
            ("min_cosine", self.min_cosine),
            ("min_top1", self.min_top1),
            ("classifier", self.classifier),
        ]
        return [(k, v) for k, v in named if isinstance(v, Mapping)]

    def check_names(self, names: list[str]) -> None:
        """Raise ``ToleranceError`` if a tolerance mapping names an output not in ``names``."""
        known = set(names)
        for label, mapping in self._mappings():
            unknown = [k for k in mapping if k != "" and k not in known]
            if unknown:
                raise ToleranceError(f"{label} names unknown output(s) {unknown}; outputs are {sorted(known)}")

    def tolerance(self, name: str) -> Tolerance:
        """The tolerances output ``name`` is judged with (float outputs; integer ones are exact).

        Nothing given for it: the precision's atol, rtol and scale_tol.  A given
        ``atol`` drops the default ``scale_tol`` floor (0 unless ``scale_tol`` is
        given too); a tolerance not given keeps its default, where the
        default is "no element check" (int8's inf) it becomes 0, so that the
        given ones are exactly what is checked.
        """
        d = DEFAULTS[self.precision]
        given = {
            label: _per_output(value, name, None)
            for label, value in (("atol", self.atol), ("rtol", self.rtol), ("scale_tol", self.scale_tol))
        }
        named = tuple(label for label, v in given.items() if v is not None)
        if not named:
            atol, rtol, scale_tol = float(d["atol"]), float(d["rtol"]), float(d["scale_tol"])
        else:

            def partner(label: str) -> float:
                v = given[label]
                if v is not None:
                    return float(v)
                default = float(d[label])
                return default if math.isfinite(default) else 0.0

            atol, rtol = partner("atol"), partner("rtol")
            if given["scale_tol"] is not None:
                scale_tol = float(given["scale_tol"])
            elif given["atol"] is not None:
                scale_tol = 0.0
            else:
                scale_tol = float(d["scale_tol"])
        min_cos = _per_output(self.min_cosine, name, None)
        min_top1 = _per_output(self.min_top1, name, None)
        return Tolerance(
            atol,
            rtol,
            scale_tol,
            None if min_cos is None else float(min_cos),
            None if min_top1 is None else float(min_top1),
            named,
        )

    def __call__(self, outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Comparison:
        """Compare ``outputs`` (backend under test) with ``reference``, output by output."""
        self.check_names(list(reference))
        results = []
        for name, ref in reference.items():
            if name in outputs:
                results.append(self.compare_output(name, np.asarray(outputs[name]), np.asarray(ref)))
        missing = tuple(n for n in reference if n not in outputs)
        unexpected = tuple(n for n in outputs if n not in reference)
        return Comparison(tuple(results), missing, unexpected)

    def compare_output(self, name: str, got: np.ndarray, ref: np.ndarray) -> OutputResult:
        tol = self.tolerance(name)
        atol, rtol, scale_tol = tol.atol, tol.rtol, tol.scale_tol
        min_cos, min_top1 = tol.min_cosine, tol.min_top1
        classifier = _per_output(self.classifier, name, None)
        exact = ref.dtype.kind in "iub"
        if exact:
            atol = rtol = scale_tol = 0.0
        base: dict[str, Any] = dict(
            name=name,
            ref_shape=tuple(ref.shape),
            ref_dtype=str(ref.dtype),
            atol=atol,
            rtol=rtol,
            scale_tol=scale_tol,
            min_cosine=min_cos,
            min_top1=min_top1,
            precision=self.precision,
            given=tol.given,
            exact=exact,
        )
        reasons: list[str] = []
        if got.shape != ref.shape:
            return OutputResult(
                passed=False,
                reasons=(f"shape {list(got.shape)} differs from the reference's {list(ref.shape)}",),
                shape=tuple(got.shape),
                dtype=str(got.dtype),
                atol_effective=atol,
                elements=int(ref.size),
                **base,
            )
        if self.check_dtype and got.dtype != ref.dtype:
            reasons.append(f"dtype {got.dtype} differs from the reference's {ref.dtype}")
        if got.dtype.kind not in "iubf" or ref.dtype.kind not in "iubf":
            ok = bool(np.array_equal(got, ref))
            return OutputResult(
                passed=ok and not reasons,
                reasons=tuple(reasons + ([] if ok else ["values differ"])),
                shape=tuple(got.shape),
                dtype=str(got.dtype),
                atol_effective=0.0,
                elements=int(ref.size),
                **base,
            )

        g = got.astype(np.float64)
        r = ref.astype(np.float64)
        # Non-finite values: same positions, same signs.
        g_nan, r_nan = np.isnan(g), np.isnan(r)
        g_inf, r_inf = np.isinf(g), np.isinf(r)
        nonfinite_ok = bool(
            np.array_equal(g_nan, r_nan) and np.array_equal(g_inf, r_inf) and np.array_equal(g[g_inf], r[r_inf])
        )
        if not nonfinite_ok:
            reasons.append(
                f"NaN/Inf positions differ: reference has {int(r_nan.sum())} NaN/{int(r_inf.sum())} Inf, "
                f"output has {int(g_nan.sum())} NaN/{int(g_inf.sum())} Inf"
                f"; {_nonfinite_positions(g, r)}"
            )
        both = np.isfinite(g) & np.isfinite(r)
        special_same = (g_nan & r_nan) | (g_inf & r_inf & (g == r))
        with np.errstate(invalid="ignore", over="ignore"):
            absdiff = np.where(both, np.abs(g - r), np.where(special_same, 0.0, np.inf))
        absref = np.abs(np.where(np.isfinite(r), r, 0.0))
        finite_ref = r[np.isfinite(r)]
        scale = float(np.max(np.abs(finite_ref))) if finite_ref.size else 0.0
        atol_eff = max(atol, scale_tol * scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            reldiff = np.where(absdiff == 0, 0.0, absdiff / absref)
        if self.rule == "sum":
            bad = absdiff > atol_eff + rtol * absref
        else:
            bad = (absdiff > atol_eff) & (absdiff > rtol * absref)
        mismatches = int(np.count_nonzero(bad))
        if mismatches:
            worst = np.unravel_index(int(np.argmax(np.where(bad, absdiff, -1.0))), ref.shape) if ref.ndim else ()
            reasons.append(
                f"{mismatches} of {ref.size} element(s) exceed atol={atol_eff:.3g} and rtol={rtol:.3g} "
                f"(worst at {list(int(i) for i in worst)}: got {float(g[worst]):.6g}, reference {float(r[worst]):.6g})"
            )
        finite_abs = absdiff[both]
        max_abs = float(finite_abs.max()) if finite_abs.size else 0.0
        finite_rel = reldiff[both & np.isfinite(reldiff)]
        max_rel = float(finite_rel.max()) if finite_rel.size else (math.inf if finite_abs.size and max_abs > 0 else 0.0)
        mean_abs = float(finite_abs.mean()) if finite_abs.size else 0.0
        mse = float(np.mean(finite_abs**2)) if finite_abs.size else 0.0
        cos = _cosine(g[both], r[both])
        # Minimum passing tolerances (elemwise rule): Polygraphy's "minimum required tolerance".
        rel_fail = absdiff > rtol * absref
        min_atol = float(absdiff[rel_fail].max()) if rel_fail.any() else 0.0
        abs_fail = absdiff > atol_eff
        min_rtol = float(reldiff[abs_fail].max()) if abs_fail.any() else 0.0

        top1 = topk = None
        k = None
        if classifier is not False and _is_classifier(ref, classifier):
            top1, topk, k = _topk_agreement(g, r, self.top_k)
        if min_cos is not None and not (cos >= float(min_cos)):
            reasons.append(f"cosine similarity {cos:.6f} below {float(min_cos)}")
        if min_top1 is not None and top1 is not None and top1 < float(min_top1):
            reasons.append(f"top-1 agreement {top1:.3g} below {float(min_top1)}")
        return OutputResult(
            passed=not reasons,
            reasons=tuple(reasons),
            shape=tuple(got.shape),
            dtype=str(got.dtype),
            atol_effective=atol_eff,
            max_abs_error=max_abs,
            max_rel_error=max_rel,
            mean_abs_error=mean_abs,
            mse=mse,
            cosine=cos,
            ref_scale=scale,
            mismatches=mismatches,
            elements=int(ref.size),
            nonfinite_match=nonfinite_ok,
            min_atol=min_atol,
            min_rtol=min_rtol,
            top1_agreement=top1,
            topk_overlap=topk,
            k=k,
            **base,
        )


NONFINITE_POSITIONS = 8
"""How many differing NaN/Inf positions a reason lists (then a count of the rest)."""


def _nonfinite_positions(g: np.ndarray, r: np.ndarray, limit: int = NONFINITE_POSITIONS) -> str:
    """Where NaN/Inf differ, in index order: ``at [0, 3] (got 0.17, reference nan), ... (+6 more)``."""
    g_nan, r_nan = np.isnan(g), np.isnan(r)
    with np.errstate(invalid="ignore"):
        differ = (g_nan != r_nan) | ((np.isinf(g) | np.isinf(r)) & ~(g_nan | r_nan) & (g != r))
    where = np.argwhere(differ) if g.ndim else (np.zeros((1, 0), int) if bool(differ) else np.zeros((0, 0), int))
    shown = [
        f"[{', '.join(str(int(i)) for i in idx)}] (got {float(g[tuple(idx)]):.6g}, reference "
        f"{float(r[tuple(idx)]):.6g})"
        for idx in where[:limit]
    ]
    more = f" (+{len(where) - limit} more)" if len(where) > limit else ""
    return "at " + ", ".join(shown) + more


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 1.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def _is_classifier(ref: np.ndarray, hint: bool | None) -> bool:
    if ref.dtype.kind != "f":
        return False
    shape = ref.shape
    if len(shape) == 4 and shape[2:] == (1, 1):
        shape = shape[:2]
    if hint:
        return len(shape) >= 1 and shape[-1] >= 2
    return len(shape) == 2 and shape[1] >= 10


def _rows(a: np.ndarray) -> np.ndarray:
    """A classifier output as ``[rows, classes]`` (``[N, C, 1, 1]`` and ``[C]`` included)."""
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        return a.reshape(a.shape[0], a.shape[1])
    return a.reshape(-1, a.shape[-1])


def _topk_agreement(g: np.ndarray, r: np.ndarray, k: int) -> tuple[float, float, int]:
    """Fraction of rows whose argmax agrees, and mean overlap of the top-k sets."""
    g2 = np.nan_to_num(_rows(g), nan=-np.inf)
    r2 = np.nan_to_num(_rows(r), nan=-np.inf)
    k = min(k, r2.shape[1])
    top1 = float(np.mean(np.argmax(g2, axis=1) == np.argmax(r2, axis=1)))
    gk = np.argsort(-g2, axis=1, kind="stable")[:, :k]
    rk = np.argsort(-r2, axis=1, kind="stable")[:, :k]
    overlap = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(gk, rk)]))
    return top1, overlap, k


def polygraphy_verdict(
    outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], atol: Tol, rtol: Tol
) -> dict[str, bool]:
    """Polygraphy's own elementwise verdict on the same arrays (needs ``polygraphy``).

    nnport's rule with ``scale_tol=0`` is Polygraphy's ``elemwise`` check; the
    tests hold the two to the same answers.
    """
    from polygraphy.comparator import IterationResult
    from polygraphy.logger import G_LOGGER

    try:
        from polygraphy.comparator.compare import SimpleCompareFunc

        func = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="elemwise")
    except ImportError:  # polygraphy < 0.53
        from polygraphy.comparator import CompareFunc

        func = CompareFunc.simple(atol=atol, rtol=rtol, check_error_stat="elemwise")
    run0 = IterationResult({k: np.asarray(v) for k, v in outputs.items()}, runner_name="backend")
    run1 = IterationResult({k: np.asarray(v) for k, v in reference.items()}, runner_name="reference")
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        result = func(run0, run1)
    return {name: bool(res) for name, res in result.items()}


# -- the model on several devices against a reference (nnport compare) ------------------------------------------


@dataclass
class DeviceComparison:
    """One device's run of a model against the reference: its comparison, or why it could not run."""

    device: str
    comparison: Comparison | None = None
    error: str | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.comparison is not None and self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "device": self.device,
            "passed": self.passed,
            "error": self.error,
            "outputs": [o.to_dict() for o in c.outputs] if c is not None else [],
            **({"missing": list(c.missing), "reasons": c.reasons()} if c is not None else {}),
        }


def reference_outputs(model: Any, reference: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference's outputs: a device (``onnxruntime:cpu``), or ``oracle``/``onnx.reference`` (the oracle)."""
    if reference in ("onnx.reference", "oracle"):
        from .oracle import evaluate  # onnx.reference with the corrected kernels

        return evaluate(model, dict(feeds), list(model.output_names))
    import nnport

    return nnport.compile(model, reference, fallback=False).run(feeds)


def compare_devices(
    model: Any,
    devices: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    *,
    reference: str = "onnxruntime:cpu",
    comparator: Comparator | None = None,
    precision: str = "fp32",
    calibration: Any = None,
) -> tuple[dict[str, np.ndarray], list[DeviceComparison]]:
    """Run ``model`` on each device with the same ``feeds`` and compare each with ``reference``.

    Returns (the reference's outputs, one ``DeviceComparison`` per device, in order).  A device
    that cannot compile or run the model is a row with its error, not an exception; the
    reference failing raises.  ``comparator`` defaults to ``Comparator(precision=precision)``.
    """
    import nnport

    comparator = comparator or Comparator(precision=precision)
    comparator.check_names(list(model.output_names))
    expected = reference_outputs(model, reference, feeds)
    rows: list[DeviceComparison] = []
    for device in devices:
        row = DeviceComparison(device)
        try:
            compiled = nnport.compile(model, device, fallback=False, precision=precision, calibration=calibration)
            row.device = compiled.device.id
            row.outputs = compiled.run(feeds)
        except NnportError as exc:
            row.error = f"{type(exc).__name__}: {exc}"
        else:
            row.comparison = comparator(row.outputs, expected)
        rows.append(row)
    return expected, rows
