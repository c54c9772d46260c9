"""What the benchmark scripts share: timing, peak memory, and result files that carry the environment."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Wall time of ``fn()`` over ``repeats`` runs after ``warmup`` ones: median, min and all runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}


def read_bandwidth(mib: int = 512, repeats: int = 3) -> float:
    """Bytes per second one NumPy pass reads from memory (a float32 sum over ``mib`` MiB, best run): the
    floor any statistics pass over data that size meets on this machine."""
    import numpy as np

    data = np.ones((mib << 20) // 4, dtype=np.float32)
    best = min(time_calls(data.sum, repeats)["runs_s"])
    return data.nbytes / best


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn) -> int | None:
    """Peak resident memory ``fn()`` adds above what the process held when it started (None if unknown)."""
    if not reset_peak_rss():
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def write_result(name: str, payload: dict, out_dir: Path | None = None) -> Path:
    """Write ``payload`` plus the environment manifest to ``<out_dir>/<name>-<time>.json`` (atomically,
    never replacing an existing file)."""
    from diffcore import env
    from diffcore.files import write_json

    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": env.collect(), **payload}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, k = out_dir / f"{name}-{stamp}.json", 1
    while target.exists():
        target, k = out_dir / f"{name}-{stamp}-{k}.json", k + 1
    return Path(write_json(target, payload, what="benchmark result"))


def print_and_save(text: str, name: str, out: Path | None = None) -> Path:
    """Print a text result and write it to ``out`` (default bench/results/<name>-<date>.txt)."""
    import datetime

    print(text)
    target = Path(out) if out else Path(RESULTS) / f"{name}-{datetime.date.today():%Y%m%d}.txt"
    target.write_text(text)
    return target
