"""The torch model as deployed: a forward without hooks, and whether hooks changed its outputs.

diffcore's hooks only read module outputs, but a module may branch on being hooked (fast paths that
forward hooks disable); then the captured layers come from another computation than the deployed model's.
"""
from __future__ import annotations

from ..errors import DiffcoreError

__all__ = ["NoHooks", "hooks_change"]


class NoHooks:
    """Stands in for ``_Hooks`` where a forward must run exactly as deployed: registers nothing."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def error(self, exc: BaseException) -> DiffcoreError:
        return DiffcoreError(f"forward of {self.name} failed: {type(exc).__name__}: {exc}")


def _same_tensor(a, b) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool((a == b).all())


def hooks_change(name: str, hooked: list, plain: list) -> str:
    """The warning when the hooked run's outputs differ from the unhooked run's, else ""."""
    if len(hooked) != len(plain):
        return (f"{name} returns {len(hooked)} output(s) with forward hooks but {len(plain)} without: the "
                "captured layers come from a different computation than the model as deployed")
    changed = [i for i, (h, p) in enumerate(zip(hooked, plain)) if not _same_tensor(h, p)]
    if not changed:
        return ""
    worst = max(_max_abs_diff(hooked[i], plain[i]) for i in changed)
    return (f"forward hooks changed the outputs of {name} (output(s) {changed}, max |diff| {worst:.3g}) "
            "against a run without hooks: the captured layers come from a slightly different computation "
            "than the model as deployed; the outputs are judged on the run without hooks")


def _max_abs_diff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
