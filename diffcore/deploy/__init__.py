"""Deployment validation: golden sets, environment manifests, preprocessing artifacts, export checks, and
``validate``, which runs them as one checklist.

    >>> from diffcore import deploy
    >>> deploy.record_golden("model.onnx", "inputs.npz", "golden/", texts=["hello world"])   # reference machine
    >>> result = deploy.check_golden("model.onnx", "golden/")                               # any machine
    >>> checklist = deploy.validate("model.onnx", reference="net.py:make", golden="golden/")
    >>> print(checklist.to_text()); bool(checklist)

Like the rest of diffcore, importing this package loads NumPy only; frameworks load when a check runs.
"""
from .artifacts import (Artifact, check_artifacts, check_tokens, declared_artifacts, fingerprint, tokenize,
                        write_artifact_manifest)
from .checklist import ChecklistResult, CheckRow
from .envdiff import EnvDiff, EnvDifference, env_diff
from .export_checks import check_dynamic_axes, check_export, check_opset, check_signature
from .golden import Golden, GoldenIntegrityError, GoldenResult, check_golden, load_golden, record_golden
from .validate import validate

__all__ = [
    "validate", "ChecklistResult", "CheckRow",
    "record_golden", "check_golden", "load_golden", "Golden", "GoldenResult", "GoldenIntegrityError",
    "env_diff", "EnvDiff", "EnvDifference",
    "Artifact", "declared_artifacts", "write_artifact_manifest", "fingerprint", "check_artifacts",
    "tokenize", "check_tokens",
    "check_export", "check_opset", "check_dynamic_axes", "check_signature",
]
