"""The comparison report as data: ``LayerRow`` per matched pair, ``DiffReport`` for the whole comparison.

JSON (``DiffReport.to_json``) is strict JSON: non-finite floats are written as the strings ``"Infinity"``,
``"-Infinity"`` and ``"NaN"`` and read back as floats. ``SCHEMA_VERSION`` changes when a field changes
meaning or disappears; new fields may be added without a change.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..files import decode_nonfinite, to_json

SCHEMA_VERSION = "diffcore.report/1"

# Row statuses, from the localizer (localize.py documents the rules).
OK = "ok"                # within the 0.1 % band
DRIFT = "drift"          # above 0.1 % but expected for the test dtype and depth
DIVERGED = "diverged"    # a divergence rule fired here: the error is born in this layer
CARRIED = "carried"      # past a rule, but the error arrived from upstream (its local error is small)
NOT_COMPARABLE = "not comparable"  # no element is finite on both sides: nothing was measured
FUSED = "fusion-dependent"  # seen only with an ORT fusion disabled by the instrumentation (localize.py)
STATUSES = (OK, DRIFT, DIVERGED, CARRIED, NOT_COMPARABLE, FUSED)

# Verdicts. "inconclusive": nothing decisive was compared (no model output paired, or an output with no
# element finite on both sides); never a pass.
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
EXIT_CODES = {PASS: 0, FAIL: 1, INCONCLUSIVE: 4}



# The columns a reader looks at first, in ``rows()``, ``to_dict()`` and ``to_dataframe()``.
KEY_COLUMNS = ("name", "status", "rel_l2", "local_rel_l2", "cause")


def _key_first(row: dict) -> dict:
    return {**{k: row[k] for k in KEY_COLUMNS if k in row}, **row}


def _num(value) -> str:
    return "None" if value is None else f"{float(value):.3g}"


@dataclass(repr=False)
class LayerRow:
    """Statistics of one matched pair of tensors (a layer output or a model output)."""

    index: int                 # position in the reference's execution order
    name: str                  # torch module path where known, else the ONNX node or value name
    ref_tensor: str            # the probe key on the reference side
    test_tensor: str           # the probe key on the test side
    shape: list
    ref_dtype: str
    test_dtype: str
    max_abs: float
    mean_abs: float
    max_rel: float
    rel_l2: float
    cosine: float
    snr_db: float
    mismatch_frac: float
    nan_ref: int
    nan_test: int
    inf_ref: int
    inf_test: int
    max_ulp: float = 0.0
    p99_abs: float = 0.0
    overflow_risk: int = 0
    underflow_risk: int = 0
    max_abs_index: list | None = None
    new_nonfinite: int = 0     # NaN/Inf in test where the reference has none (or another Inf)
    count: int = 0             # elements
    finite_count: int = 0      # elements finite on both sides: the population of every error statistic
    op_type: str | None = None
    module: str | None = None  # torch module path the tensor leaves (or, for an ONNX value, lives in)
    match: str = ""            # how the pair was matched (matcher.py)
    local_max_abs: float | None = None   # test layer run on the reference's inputs; None if not computed
    local_rel_l2: float | None = None
    local_new_nonfinite: int | None = None
    status: str = OK
    cause: str = ""            # why the status, in words
    notes: list = field(default_factory=list)
    # integer/bool tensors are compared exactly (stats/exact.py): the float columns above then hold the
    # values' differences as numbers, and these say how many elements differ and where the first one is
    exact: bool = False
    mismatch_count: int | None = None
    first_mismatch_index: list | None = None
    first_mismatch_values: list | None = None
    # range (ranges.py): the reference's largest finite magnitude, and the powers of two left to the test
    # dtype's largest finite value (negative: past it; None outside float16/bfloat16)
    ref_absmax: float | None = None
    headroom_bits: float | None = None
    # amplification (amplification.py): the relative L2 error arriving at the layer's inputs, and how many
    # times the layer multiplies it: max(rel_l2 - local_rel_l2, 0) / input_rel_l2
    input_rel_l2: float | None = None
    gain: float | None = None
    # quantized layers (diffcore/quant): what the layer computes in, the relative L2 error its scales predict
    # for a correct layer, and the terms of that prediction (input, weight, output rounding)
    precision: str | None = None
    predicted_rel_l2: float | None = None
    quant_terms: dict | None = None
    quant_issue: str = ""      # what is wrong with the quantization itself (misread zero point, clipped range)
    # dataset comparisons (diffcore/dataset): count, worst_sample, worst_rel_l2, failing_samples, p50/p90/max
    samples: dict | None = None

    @property
    def comparable(self) -> bool:
        """False when nothing was measured: an empty tensor, or no element finite on both sides."""
        if self.count > 0:
            return self.finite_count > 0
        return not any(d == 0 for d in (self.shape or []))  # count 0 with no 0-dim: a row built by hand

    @classmethod
    def from_exact(cls, stats, *, index, name, ref_tensor, test_tensor, op_type=None, match="", notes=None):
        """A row from ``ExactStats`` (an integer or bool pair); the localizer fails it on any mismatch."""
        first = stats.first_mismatch_index
        return cls(
            index=index, name=name, ref_tensor=ref_tensor, test_tensor=test_tensor, shape=list(stats.shape),
            ref_dtype=stats.ref_dtype, test_dtype=stats.test_dtype, max_abs=stats.max_abs,
            mean_abs=stats.mean_abs, max_rel=stats.rel_l2, rel_l2=stats.rel_l2,
            cosine=None, snr_db=None, mismatch_frac=stats.mismatch_frac, nan_ref=0, nan_test=0,
            inf_ref=0, inf_test=0, count=stats.count, finite_count=stats.count, op_type=op_type, match=match,
            notes=list(notes or []), exact=True, mismatch_count=stats.mismatch_count,
            first_mismatch_index=None if first is None else list(first),
            first_mismatch_values=None if stats.first_mismatch_values is None
            else list(stats.first_mismatch_values),
        )

    @classmethod
    def from_stats(cls, stats, *, index, name, ref_tensor, test_tensor, op_type=None, match="", notes=None):
        """A row from ``DriftStats``; status and local error are filled in by the localizer."""
        from ..ranges import headroom_bits, ref_absmax

        absmax = ref_absmax(stats)
        return cls(
            index=index, name=name, ref_tensor=ref_tensor, test_tensor=test_tensor, shape=list(stats.shape),
            ref_dtype=stats.ref_dtype, test_dtype=stats.test_dtype, max_abs=stats.max_abs,
            mean_abs=stats.mean_abs, max_rel=stats.max_rel, rel_l2=stats.rel_l2, cosine=stats.cosine,
            snr_db=stats.snr_db, mismatch_frac=stats.mismatch_frac, nan_ref=stats.nan_ref,
            nan_test=stats.nan_test, inf_ref=stats.inf_ref, inf_test=stats.inf_test, max_ulp=stats.max_ulp,
            p99_abs=stats.p99_abs, overflow_risk=stats.overflow_risk, underflow_risk=stats.underflow_risk,
            max_abs_index=None if stats.max_abs_index is None else list(stats.max_abs_index),
            new_nonfinite=(stats.nan_test - stats.nan_both) + (stats.inf_test - stats.inf_both),
            count=stats.count, finite_count=stats.finite_count,
            op_type=op_type, match=match, notes=list(notes or []),
            ref_absmax=absmax, headroom_bits=headroom_bits(absmax, stats.test_dtype),
        )

    def set_local(self, stats) -> None:
        """Record the local error: this layer of the test model run on the reference's inputs."""
        self.local_max_abs = stats.max_abs
        self.local_rel_l2 = stats.rel_l2
        self.local_new_nonfinite = (stats.nan_test - stats.nan_both) + (stats.inf_test - stats.inf_both)

    def to_dict(self) -> dict:
        """Every field, the key ones first (``KEY_COLUMNS``)."""
        return _key_first(asdict(self))

    def __repr__(self) -> str:
        local = "" if self.local_rel_l2 is None else f", local_rel_l2={_num(self.local_rel_l2)}"
        return f"LayerRow(#{self.index} {self.name!r}, {self.status}, rel_l2={_num(self.rel_l2)}{local})"

    def _repr_html_(self) -> str:
        """A small table of the key fields (Jupyter shows it instead of the dataclass's wall of text)."""
        from .html import row_card

        return row_card(self)

    @classmethod
    def from_dict(cls, data: dict) -> LayerRow:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Unmatched:
    """A tensor of one side with no counterpart on the other, and why."""

    side: str       # "ref" or "test"
    key: str
    reason: str
    name: str = ""  # display name (module path) where known

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(repr=False)
class DiffReport:
    """The result of comparing two models layer by layer.

    ``bool(report)`` is True when the comparison passes; ``report.exit_code`` is the CLI's (0 pass, 1 fail,
    4 inconclusive: nothing decisive was compared, ``reason`` says why). ``coverage`` says how much was
    compared (``coverage_of`` in comparison.py documents its keys). In a notebook the report renders as HTML
    with the first divergence highlighted.
    """

    verdict: str                         # "pass", "fail" or "inconclusive"
    tolerance: dict                      # atol/rtol (and their source) plus the divergence rule's bands
    layers: list                         # LayerRow, in the reference's execution order
    outputs: list                        # LayerRow, one per model output
    first_divergence: LayerRow | None = None
    unmatched: list = field(default_factory=list)   # Unmatched
    ref: dict = field(default_factory=dict)         # description of the reference side
    test: dict = field(default_factory=dict)
    summary: str = ""                    # one paragraph: what diverged first, where, why
    warnings: list = field(default_factory=list)
    findings: list = field(default_factory=list)  # what a converter or diffcore changed (diffcore/findings.py)
    timings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)  # how much was compared: layers, outputs, elements
    reason: str = ""                     # one line: why the verdict is inconclusive (empty otherwise)
    dataset: dict | None = None          # over a dataset: samples, verdict counts, failing samples (dataset/)
    schema_version: str = SCHEMA_VERSION

    # ---- verdict ---------------------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def inconclusive(self) -> bool:
        return self.verdict == INCONCLUSIVE

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 4 inconclusive (CI must not read "nothing compared" as success)."""
        return EXIT_CODES.get(self.verdict, EXIT_CODES[FAIL])

    # ---- data ------------------------------------------------------------------------------------------
    def rows(self, include_outputs: bool = False) -> list[dict]:
        """Rows as plain dicts (name, status, rel_l2, local_rel_l2, cause first), ready for pandas."""
        rows = [r.to_dict() for r in self.layers]
        if include_outputs:
            rows += [dict(r.to_dict(), is_output=True) for r in self.outputs]
        return rows

    def to_dataframe(self, include_outputs: bool = False):
        """The rows as a ``pandas.DataFrame`` (the ``pandas`` extra): name, status, rel_l2, local_rel_l2,
        cause first, then every other ``LayerRow`` field; ``is_output`` last with ``include_outputs``."""
        from .._deps import require

        pandas = require("pandas", "DataFrames")
        rows = self.rows(include_outputs)
        columns = list(_key_first({f.name: None for f in fields(LayerRow)}))
        if include_outputs:
            rows = [dict(r, is_output=r.get("is_output", False)) for r in rows]
            columns.append("is_output")
        return pandas.DataFrame(rows, columns=columns)

    def row(self, name: str) -> LayerRow:
        """The layer (or output) row called ``name``."""
        for r in self.layers + self.outputs:
            if r.name == name or r.ref_tensor == name:
                return r
        from ..errors import DiffcoreError, format_choices

        raise DiffcoreError(f"no row named {name!r}; rows: {format_choices([r.name for r in self.layers])}")

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version, "verdict": self.verdict, "summary": self.summary,
            "tolerance": self.tolerance,
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
            "layers": [r.to_dict() for r in self.layers], "outputs": [r.to_dict() for r in self.outputs],
            "unmatched": [u.to_dict() for u in self.unmatched], "ref": self.ref, "test": self.test,
            "warnings": list(self.warnings), "findings": list(self.findings), "timings": self.timings,
            "environment": self.environment, "coverage": self.coverage, "reason": self.reason,
            **({"dataset": self.dataset} if self.dataset else {}),
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON (non-finite floats as "Infinity"/"-Infinity"/"NaN" strings)."""
        return to_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> DiffReport:
        from ..errors import DiffcoreError

        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DiffcoreError(f"report schema {version!r} is not {SCHEMA_VERSION!r}: written by another "
                                "diffcore version")
        first = data.get("first_divergence")
        return cls(
            verdict=data["verdict"], tolerance=data["tolerance"],
            layers=[LayerRow.from_dict(r) for r in data["layers"]],
            outputs=[LayerRow.from_dict(r) for r in data["outputs"]],
            first_divergence=None if first is None else LayerRow.from_dict(first),
            unmatched=[Unmatched(**u) for u in data.get("unmatched", [])], ref=data.get("ref", {}),
            test=data.get("test", {}), summary=data.get("summary", ""), warnings=data.get("warnings", []),
            findings=data.get("findings", []),
            timings=data.get("timings", {}), environment=data.get("environment", {}),
            coverage=data.get("coverage", {}), reason=data.get("reason", ""), schema_version=version,
            dataset=data.get("dataset"),
        )

    @classmethod
    def from_json(cls, text: str, what: str = "report") -> DiffReport:
        """A report from ``to_json`` text, checked against the published schema (diffcore/schemas/report.json).

        Raises:
            DiffcoreError: not JSON, another report schema version, or not valid under the schema.
        """
        from ..files import parse_json

        return cls.from_dict(decode_nonfinite(check_report_document(parse_json(text, what), what)))

    # ---- views (report/text.py, report/html.py, report/plot.py) ------------------------------------------
    def to_text(self, max_rows: int | None = 60, *, width: int | None = None, wide: bool = False,
                by: str | None = None) -> str:
        """The text report (report/text.py): ``width`` (default the terminal's, 100 when not one),
        ``wide`` for every column, ``by`` "module" or "node" (default module where scopes exist)."""
        from .text import render_text

        return render_text(self, max_rows=max_rows, width=width, wide=wide, by=by)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        from .text import coverage_text

        first = self.first_divergence
        where = f", first divergence {first.name!r} (#{first.index}, {first.status})" if first else ""
        reason = f", reason={self.reason!r}" if self.reason else ""
        return (f"<DiffReport {str(self.verdict).upper()}: {len(self.layers)} layers, {len(self.outputs)} "
                f"outputs{where}{reason}; coverage {coverage_text(self)}>")

    def _repr_html_(self) -> str:
        from .html import render_html

        return render_html(self)

    def to_html(self) -> str:
        """A standalone HTML page (the notebook view plus a page header)."""
        from .html import render_page

        return render_page(self)

    def diff(self, other) -> "ReportDiff":  # noqa: F821
        """What changed from this report (before a fix) to ``other`` (after): fixed / regressed layers,
        where the first divergence moved (report/diff.py). ``.exit_code`` is 1 if anything regressed."""
        from .diff import diff_reports

        return diff_reports(self, other)

    def suggest_fp32(self, ref, test, inputs=None, **options):
        """What to keep in float32 so this failing float16/bfloat16 comparison passes, proved by running it:
        ``ref``, ``test``, ``inputs`` and ``options`` as given to ``compare`` (diffcore/precision)."""
        from ..precision import suggest_fp32

        return suggest_fp32(ref, test, inputs, report=self, **options)

    def plot(self, ax=None, metric: str = "rel_l2"):
        """Error against depth with matplotlib (an optional dependency); returns the Axes."""
        from .plot import plot_depth

        return plot_depth(self, ax=ax, metric=metric)


def check_report_document(data, what: str = "report"):
    """``data`` when it is a diffcore.report/1 document valid under its schema; DiffcoreError otherwise (one
    line: not a report, written by another diffcore version, or the first schema problem)."""
    from ..errors import DiffcoreError
    from ..schemas import validate

    if not isinstance(data, dict) or "schema_version" not in data:
        raise DiffcoreError(f"{what} is not a diffcore report (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise DiffcoreError(f"{what} has report schema {data['schema_version']!r}, not {SCHEMA_VERSION!r}: "
                            "written by another diffcore version (or not a report)")
    validate(data, "report", what)
    return data
