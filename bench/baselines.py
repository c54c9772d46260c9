"""Baselines for the drift pass: the same statistics computed one by one, as people do by hand.

``torch_stat_by_stat`` is torch eager (CPU or CUDA), one kernel per statistic in float64, the way a
notebook would do it. The NumPy baseline is diffcore's own ``numpy`` backend (the oracle), which is written
exactly that way.
"""
from __future__ import annotations


def torch_stat_by_stat(ref, test, atol: float = 1e-5, rtol: float = 1e-3) -> dict:
    """diffcore's statistics with torch eager ops, one at a time (float64), returning Python numbers."""
    import torch

    r, t = ref.double(), test.double()
    nan_r, nan_t, inf_r, inf_t = r.isnan(), t.isnan(), r.isinf(), t.isinf()
    finite = ~(nan_r | nan_t | inf_r | inf_t)
    rf, tf = r[finite], t[finite]
    d = tf - rf
    ad = d.abs()
    ar = rf.abs()
    sum_r2, sum_t2, sum_d2 = (rf * rf).sum(), (tf * tf).sum(), (d * d).sum()
    _, exponent = torch.frexp(ar)
    spacing = torch.ldexp(torch.ones_like(ar), (exponent - 1).clamp(-14, 15) - 10)
    _, hist_exp = torch.frexp(ad)
    out = {
        "max_abs": ad.max(), "argmax": ad.argmax(), "mean_abs": ad.mean(), "rms": sum_d2.div(ad.numel()).sqrt(),
        "rel_l2": sum_d2.sqrt() / sum_r2.sqrt(), "cosine": (rf * tf).sum() / (sum_r2 * sum_t2).sqrt(),
        "snr_db": 10 * torch.log10(sum_r2 / sum_d2),
        "max_rel": (ad / ar.clamp_min(atol)).max(), "mean_rel": (ad / ar.clamp_min(atol)).mean(),
        "mismatch": (ad > atol + rtol * ar).sum(), "max_ulp": (ad / spacing).max(),
        "mean_ulp": (ad / spacing).mean(),
        "nan_ref": nan_r.sum(), "nan_test": nan_t.sum(), "inf_ref": inf_r.sum(), "inf_test": inf_t.sum(),
        "ref_min": rf.min(), "ref_max": rf.max(), "ref_mean": rf.mean(), "ref_std": rf.std(correction=0),
        "test_min": tf.min(), "test_max": tf.max(), "test_mean": tf.mean(), "test_std": tf.std(correction=0),
        "overflow": (ar >= 65520.0).sum(), "underflow": ((ar != 0) & (ar <= 2.0 ** -25)).sum(),
        "histogram": torch.bincount((hist_exp + 64).clamp(0, 130).flatten(), minlength=131),
    }
    return {k: v.tolist() for k, v in out.items()}
