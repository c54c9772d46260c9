"""What differs between two environment manifests (``diffcore.env.collect()``), numerics first.

"Works on my GPU" is not "works on the production GPU": GPU architecture, CUDA/cuDNN/driver, framework
versions and TF32 settings change results. ``env_diff`` flattens both manifests to dotted keys
(``gpu.devices[0].compute_capability``) and ranks every difference by how likely it is to move numbers.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import DiffcoreError

__all__ = ["EnvDiff", "EnvDifference", "RANKS", "env_diff", "flatten", "manifest_of", "rank_of"]



class _Absent:
    """The value of a key one manifest does not have."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()

# (rank, category, why it matters, key patterns). Lower ranks print first; the last rank is "the rest".
RANKS = (
    (0, "GPU architecture", "kernels, tensor cores and reduction order differ per architecture",
     (r"gpu\.devices\[\d+\]\.(name|compute_capability)", r"gpu\.available", r"gpu\.devices\[\]",
      r"torch\.devices", r"torch\.cuda_available")),
    (1, "CUDA / cuDNN / driver", "library kernels and algorithm choices change between versions",
     (r"torch\.(cuda_build|cudnn)", r"gpu\.(driver|cuda_driver)", r"onnxruntime\.(providers|device)")),
    (2, "framework version", "operator implementations and fusions change between releases",
     (r"torch(\.version)?", r"onnxruntime(\.version)?",
      r"packages\.(torch|numpy|onnxruntime|onnxruntime-gpu|onnx|numba|numba-cuda|llvmlite|cupy[-\w]*|"
      r"tokenizers|onnxconverter-common|onnxscript)")),
    (3, "precision setting", "TF32 and matmul precision trade float32 accuracy for speed",
     (r"torch\.(tf32_matmul|tf32_cudnn|matmul_precision|cudnn_benchmark|cudnn_deterministic)",
      r"env_vars\.(NVIDIA_TF32_OVERRIDE|TORCH_ALLOW_TF32_CUBLAS_OVERRIDE|CUBLAS_WORKSPACE_CONFIG)")),
    (4, "CPU", "SIMD width and math libraries differ per CPU",
     (r"cpu\.(model|machine)",)),
)
REST = (5, "other", "")
_COMPILED = [(rank, category, why, [re.compile(p) for p in patterns]) for rank, category, why, patterns in RANKS]
# Sections that only a full manifest has (``collect(frameworks=False)`` leaves them out).
FRAMEWORK_SECTIONS = ("torch", "onnxruntime", "gpu")


def flatten(data, prefix: str = "") -> dict:
    """``{dotted key: scalar}`` for a nested manifest: dict keys joined with ``.``, lists of dicts indexed
    ``[i]``, lists of scalars joined into one string (a provider list is one value)."""
    out: dict = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if not data and prefix:
            out[prefix] = "{}"
    elif isinstance(data, list) and any(isinstance(item, (dict, list)) for item in data):
        for i, item in enumerate(data):
            out.update(flatten(item, f"{prefix}[{i}]"))
        out[f"{prefix}[]"] = len(data)  # the count: a GPU that appears or goes is one row
    elif isinstance(data, list):
        out[prefix] = ", ".join(str(item) for item in data)
    else:
        out[prefix] = data
    return out


def rank_of(key: str) -> tuple[int, str, str]:
    """(rank, category, why) of a flattened key: lower ranks are likelier to change numerics."""
    for rank, category, why, patterns in _COMPILED:
        if any(p.fullmatch(key) for p in patterns):
            return rank, category, why
    return REST


@dataclass
class EnvDifference:
    """One key whose value differs (``ABSENT`` where one manifest lacks it)."""

    key: str
    a: object
    b: object
    rank: int
    category: str
    why: str = ""

    @property
    def numerics(self) -> bool:
        """True for the kinds of difference that are known to change numerics."""
        return self.rank < REST[0]

    def to_dict(self) -> dict:
        return {"key": self.key, "a": _json(self.a), "b": _json(self.b), "rank": self.rank, "category": self.category,
                "numerics": self.numerics, "why": self.why}


@dataclass
class EnvDiff:
    """Differences between manifest ``a`` and manifest ``b``, numerics-relevant first.

    Attributes:
        rows: the differences, sorted by rank then key.
        labels: names of the two sides in tables (e.g. ``("recorded", "here")``).
        notes: sections one manifest did not record (not counted as differences).
    """

    rows: list = field(default_factory=list)
    labels: tuple = ("A", "B")
    notes: list = field(default_factory=list)

    @property
    def numerics(self) -> list:
        """The differences likely to change numerics."""
        return [r for r in self.rows if r.numerics]

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        """One line: how many keys differ, the first few numerics-relevant ones named."""
        if not self.rows:
            return "environments match"
        shown = ", ".join(f"{r.key} {_show(r.a)} -> {_show(r.b)}" for r in self.numerics[:3])
        more = len(self.numerics) - 3
        text = f"{len(self.rows)} environment key(s) differ, {len(self.numerics)} numerics-relevant"
        if shown:
            text += f": {shown}" + (f" (+{more} more)" if more > 0 else "")
        return text

    def to_dict(self) -> dict:
        return {"schema_version": "diffcore.env-diff/1", "labels": list(self.labels),
                "differences": [r.to_dict() for r in self.rows],
                "numerics_relevant": len(self.numerics), "notes": list(self.notes)}

    def to_text(self, max_value: int = 48) -> str:
        """A table: category, key, value on each side; numerics-relevant rows first."""
        if not self.rows:
            return "\n".join(["Environments match."] + self.notes)
        from .._deps import require

        tabulate = require("tabulate", "text tables").tabulate
        cells = [[("* " if r.numerics else "  ") + r.category, r.key, _clip(_show(r.a), max_value),
                  _clip(_show(r.b), max_value)] for r in self.rows]
        table = tabulate(cells, headers=["kind", "key", *self.labels], disable_numparse=True,
                         tablefmt="simple")
        lines = [table, "(* likely to change numerics)"] + self.notes
        return "\n".join(lines)


def _json(value):
    return repr(ABSENT) if value is ABSENT else value


def _show(value) -> str:
    if value is ABSENT:
        return repr(ABSENT)
    if value is None:
        return "None"
    return str(value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def manifest_of(data, what: str = "manifest") -> dict:
    """The environment manifest in ``data``: a manifest itself, or a file embedding one under
    ``"environment"`` (a DiffReport JSON, a golden set, a validate result, a benchmark result).

    Raises:
        DiffcoreError: no manifest in it.
    """
    if isinstance(data, dict) and str(data.get("schema", "")).startswith("diffcore.env/"):
        return data
    if isinstance(data, dict) and isinstance(data.get("environment"), dict):
        return manifest_of(data["environment"], what)
    raise DiffcoreError(f"{what} holds no diffcore environment manifest (write one with "
                        "'diffcore env --json > FILE.json')")


def env_diff(a: dict, b: dict, labels=("A", "B")) -> EnvDiff:
    """Every key whose value differs between manifests ``a`` and ``b``, numerics-relevant first.

    Args:
        a, b: manifests from ``diffcore.env.collect()`` (or files embedding one, see ``manifest_of``).
        labels: names of the two sides for tables.

    Returns:
        EnvDiff: falsy when nothing differs. A framework section (torch, onnxruntime, gpu) that one side did
        not record at all is left out and named in ``notes``, not reported key by key.
    """
    # as JSON holds them: a live manifest has str subclasses (torch's TorchVersion) a file has plain str
    a, b = (json.loads(json.dumps(manifest_of(m, label), default=str)) for m, label in zip((a, b), labels))
    notes = []
    skipped = [s for s in FRAMEWORK_SECTIONS if (s in a) != (s in b)]
    for section in skipped:
        missing = labels[0] if section not in a else labels[1]
        notes.append(f"{section}: not recorded in {missing} (a manifest collected without frameworks)")
    flat_a = {k: v for k, v in flatten(a).items() if k.split(".")[0].split("[")[0] not in skipped}
    flat_b = {k: v for k, v in flatten(b).items() if k.split(".")[0].split("[")[0] not in skipped}
    rows = []
    for key in sorted(set(flat_a) | set(flat_b), key=_natural):
        va, vb = flat_a.get(key, ABSENT), flat_b.get(key, ABSENT)
        if va != vb or type(va) is not type(vb):
            rank, category, why = rank_of(key)
            rows.append(EnvDifference(key, va, vb, rank, category, why))
    rows = _drop_duplicates(rows)
    rows.sort(key=lambda r: (r.rank, _natural(r.key)))
    return EnvDiff(rows, tuple(labels), notes)


def _drop_duplicates(rows: list) -> list:
    """``packages.torch`` says what ``torch.version`` says: keep the framework section's row."""
    keys = {r.key for r in rows}
    shadow = {"packages.torch": "torch.version", "packages.onnxruntime": "onnxruntime.version",
              "packages.onnxruntime-gpu": "onnxruntime.version"}
    return [r for r in rows if shadow.get(r.key) not in keys]


def _natural(key: str):
    """Sort ``gpu.devices[10]`` after ``gpu.devices[2]``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]
