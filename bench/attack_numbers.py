"""The numeric half of bench/attack.py: edge cases for ``drift`` checked against a 60-digit decimal
reference (byte orders, the float64 range's ends, subnormals, NaN/Inf, odd layouts and dtypes)."""
from __future__ import annotations

import decimal
import math

import numpy as np


D = decimal.Context(prec=60, Emax=10 ** 6, Emin=-10 ** 6)


def _exact(ref: np.ndarray, test: np.ndarray) -> dict:
    """rel_l2, rms, snr, ref std/mean, max |d| from 60-digit decimal arithmetic over finite pairs."""
    with decimal.localcontext(D):
        return _exact_in_context(ref, test)


def _exact_in_context(ref, test) -> dict:
    r = [D.create_decimal(float(x)) for x in ref.astype(np.float64).ravel()]
    t = [D.create_decimal(float(x)) for x in test.astype(np.float64).ravel()]
    pairs = [(a, b) for a, b in zip(r, t) if a.is_finite() and b.is_finite()]
    if not pairs:
        return {}
    d2 = sum((D.multiply(b - a, b - a) for a, b in pairs), decimal.Decimal(0))
    r2 = sum((D.multiply(a, a) for a, _ in pairs), decimal.Decimal(0))
    n = decimal.Decimal(len(pairs))
    out = {"max_abs": max(abs(b - a) for a, b in pairs), "rms": D.sqrt(D.divide(d2, n))}
    if r2 != 0:
        out["rel_l2"] = D.sqrt(D.divide(d2, r2))
    if r2 != 0 and d2 != 0:
        out["snr_db"] = 10 * D.divide(D.ln(D.divide(r2, d2)), D.ln(decimal.Decimal(10)))
    finite_r = [a for a in r if a.is_finite()]
    mean = D.divide(sum(finite_r, decimal.Decimal(0)), decimal.Decimal(len(finite_r)))
    out["ref_mean"] = mean
    out["ref_std"] = D.sqrt(D.divide(sum((D.multiply(a - mean, a - mean) for a in finite_r), decimal.Decimal(0)),
                                     decimal.Decimal(len(finite_r))))
    return out


def _agrees(got: float, want: decimal.Decimal, scale: decimal.Decimal) -> bool:
    """Within 1e-9 of the exact value, or within 1e-12 of ``scale`` (the largest magnitude the statistic
    is computed from: a mean of +-65504 that cancels to 2e-8 is right to float64's rounding of 65504)."""
    limit = decimal.Decimal(np.finfo(np.float64).max)
    if abs(want) > limit:
        return math.isinf(got)
    if abs(want) < decimal.Decimal(2.0 ** -1022):  # below float64's normal range: 0 or subnormal is right
        return not math.isnan(got) and abs(got) < 2.0 ** -1000
    if not math.isfinite(got):
        return False
    error = abs(D.create_decimal(got) - want)
    return error <= decimal.Decimal("1e-9") * abs(want) or error <= decimal.Decimal("1e-12") * scale


def numeric_cases() -> list:
    rng = np.random.default_rng(5)
    base = rng.standard_normal(50)
    cases = []
    for exp in (-1000, -700, -520, -300, 0, 300, 520, 700, 1000):
        cases.append((f"scaled 2^{exp}", np.ldexp(base, exp), np.ldexp(base * 1.01, exp)))
    cases += [
        ("issue 1e200", np.array([1e200, 2e200]), np.array([1.1e200, 2.2e200])),
        ("issue 1e-200", np.array([1e-200, 2e-200]), np.array([1.1e-200, 2.2e-200])),
        ("opposite maxima", np.array([-1.7e308, 1.7e308]), np.array([1.7e308, -1.7e308])),
        ("max float", np.full(10, 1.79e308), np.full(10, 1.78e308)),
        ("subnormals", np.full(8, 5e-324) * np.arange(1, 9), np.full(8, 5e-324) * np.arange(2, 10)),
        ("zeros", np.zeros(10), np.zeros(10)), ("equal", base, base.copy()),
        ("ref zero", np.zeros(5), np.ones(5)), ("test zero", np.ones(5), np.zeros(5)),
        ("nan inf", np.array([1.0, np.nan, np.inf, 2.0]), np.array([1.5, np.nan, np.inf, -2.0])),
        ("mixed big and tiny", np.array([1e300, 1e-300, 1.0]), np.array([1e300, 2e-300, 1.0])),
        ("negative zero", np.array([-0.0, 0.0]), np.array([0.0, -0.0])),
        ("one element", np.array([3.0]), np.array([4.0])),
        ("0-d", np.array(2.0), np.array(2.5)), ("empty", np.zeros(0), np.zeros(0)),
        ("large n", rng.standard_normal(100000), rng.standard_normal(100000)),
        ("strided", base[::3], base[::3] * 1.5), ("fortran", np.asfortranarray(base.reshape(5, 10)),
                                                  np.asfortranarray(base.reshape(5, 10)) + 1),
        ("int64", np.arange(20, dtype=np.int64), np.arange(20, dtype=np.int64) + 1),
        ("uint8", np.arange(20, dtype=np.uint8), np.arange(20, dtype=np.uint8)[::-1].copy()),
        ("float16 extremes", np.array([65504, 6e-8, -65504], np.float16), np.array([65504, 0, -65000], np.float16)),
        ("float32 huge", np.full(4, 3e38, np.float32), np.full(4, 3.3e38, np.float32)),
    ]
    for order in (">f2", ">f4", ">f8", "<f2", ">i4", ">u2"):
        cases.append((f"byte order {order}", base.astype(np.float32), base.astype(order)))
        cases.append((f"both {order}", base.astype(order), (base * 1.1).astype(order)))
    return cases


def attack_numbers(tally: dict, failures: list) -> None:
    """Every case on every host backend against the decimal reference; counts into ``tally``."""
    import diffcore

    for name, ref, test in numeric_cases():
        want = _exact(ref, test)
        values = np.abs(np.concatenate([ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()]))
        values = values[np.isfinite(values)]
        scale = D.create_decimal(float(values.max())) if values.size else decimal.Decimal(0)
        for backend in ("numpy", "numba-cpu"):
            tally["tried"] += 1
            try:
                stats = diffcore.drift(ref, test, backend=backend)
            except Exception as exc:  # noqa: BLE001
                tally["tracebacks"] += 1
                failures.append(f"drift {name} [{backend}]: {type(exc).__name__}: {exc}")
                continue
            wrong = [k for k, v in want.items() if not _agrees(getattr(stats, k), v, scale)]
            if wrong:
                tally["wrong_numbers"] += 1
                shown = ", ".join(f"{k}={getattr(stats, k)!r} (exact {float(want[k]):.6g})" for k in wrong)
                failures.append(f"drift {name} [{backend}]: wrong {shown}")
            else:
                tally["expected_ok"] += 1


