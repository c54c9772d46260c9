"""diffcore's Numba disk cache: where it lives, damaged files repaired, concurrent first compiles safe.

Every run that matters happens in a new process (a cache is for the next process), each test with its own
empty NUMBA_CACHE_DIR. The small kernels (``order_key``, ``key_value``) exercise the cache machinery in
about a second a process; one test runs the full drift kernels through damage and repair.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

from diffcore.backends import _numba_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# Compiles order_key/key_value for several signatures, in an order set by argv[1] (so that processes
# racing on one index add different keys at once); prints the results and Numba's cache hits and misses.
SMALL = r"""
import json, sys
import numpy as np
from diffcore.backends import _numba_cpu_kernels as k
order = int(sys.argv[1]) if len(sys.argv) > 1 else 0
calls = [(k.order_key, np.float64(-2.5)), (k.order_key, np.float32(0.75)),
         (k.key_value, np.int64(4611686018427387904)), (k.key_value, np.int32(-7))]
calls = calls[order % 4:] + calls[:order % 4]
out = {"values": {}, "hits": 0, "misses": 0, "cache": type(k.order_key._cache).__name__}
for fn, arg in calls:
    out["values"][f"{fn.py_func.__name__}({type(arg).__name__})"] = repr(fn(arg))
for fn in (k.order_key, k.key_value):
    out["hits"] += sum(fn.stats.cache_hits.values())
    out["misses"] += sum(fn.stats.cache_misses.values())
print(json.dumps(out))
"""

# A full drift through the numba-cpu kernels; prints the raw state row bits and the drivers' misses.
FULL = r"""
import json
import numpy as np
from diffcore.backends import get, _numba_cpu_kernels as k
from diffcore.drift import _job
rng = np.random.default_rng(0)
ref = rng.standard_normal(5000).astype(np.float32)
test = (ref + np.float32(1e-3) * rng.standard_normal(5000).astype(np.float32))
ref[7] = np.nan
(i, f, h), = get("numba-cpu").reduce([_job(ref, test, "x", None, None, None)])
misses = sum(sum(fn.stats.cache_misses.values()) for fn in (k.reduce_tiles, k.merge_pairs))
print(json.dumps({"bits": [int(x) for x in i] + [int(x) for x in f.view(np.int64)] + [int(x) for x in h],
                  "misses": misses}))
"""


def _env(cache: Path | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(ROOT)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    env.update(extra)
    return env


def _run(script: str, env: dict, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _files(cache: Path, suffix: str) -> list[Path]:
    return sorted(cache.rglob(f"*{suffix}"))


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "garbage": os.urandom(max(64, len(data)))}[how])


def test_cache_root_follows_numba_cache_dir_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "explicit"))
    assert _numba_cache.cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _numba_cache.cache_root() == tmp_path / "xdg" / "diffcore" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _numba_cache.cache_root() == tmp_path / "home" / ".cache" / "diffcore" / "numba"
    assert _numba_cache.cache_dir().parent == _numba_cache.cache_root()


def test_kernels_are_cached_in_the_user_cache_folder_not_in_the_package(tmp_path):
    package = ROOT / "diffcore"
    before = set(package.rglob("*.nb[ic]"))
    _run(SMALL, _env(None, XDG_CACHE_HOME=str(tmp_path / "xdg")))
    cached = _files(tmp_path / "xdg" / "diffcore" / "numba", ".nbi")
    assert len(cached) == 2, cached  # one index a function: order_key, key_value
    assert set(package.rglob("*.nb[ic]")) == before


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path):
    first = _run(SMALL, _env(tmp_path))
    again = _run(SMALL, _env(tmp_path))
    assert first["misses"] == 4 and again == {**first, "hits": 4, "misses": 0}


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_a_damaged_cache_file_is_discarded_recompiled_and_repaired(tmp_path, suffix, how):
    good = _run(SMALL, _env(tmp_path))
    victims = _files(tmp_path, suffix)
    assert victims, f"no {suffix} files written"
    for path in victims:
        _damage(path, how)
    repaired = _run(SMALL, _env(tmp_path))
    assert repaired["values"] == good["values"]
    assert repaired["misses"] > 0  # the damaged entries were recompiled, not loaded
    after = _run(SMALL, _env(tmp_path))
    assert after["values"] == good["values"] and after["misses"] == 0, after  # ... and the cache repaired
    for path in _files(tmp_path, ".nbi") + _files(tmp_path, ".nbc"):
        magic = _numba_cache.MAGIC_INDEX if path.suffix == ".nbi" else _numba_cache.MAGIC_DATA
        assert _numba_cache.unseal(magic, path.read_bytes()) is not None, f"{path.name} still damaged"


def test_a_data_file_swapped_for_another_keys_is_not_loaded(tmp_path):
    """Two entries' data files exchanged (what Numba's first-free-slot numbering did under a race): each is
    refused, since a data file names the key it was written for."""
    good = _run(SMALL, _env(tmp_path))
    data = [p for p in _files(tmp_path, ".nbc") if p.name.startswith("_numba_cpu_kernels.order_key")]
    assert len(data) == 2
    a, b = data[0].read_bytes(), data[1].read_bytes()
    data[0].write_bytes(b)
    data[1].write_bytes(a)
    swapped = _run(SMALL, _env(tmp_path))
    assert swapped["values"] == good["values"] and swapped["misses"] >= 2


def test_full_kernels_survive_every_cache_file_damaged(tmp_path):
    """The drift kernels themselves: every index garbage and every data file truncated at once; the next
    process gives the same bits and rewrites the cache, the one after loads it."""
    first = _run(FULL, _env(tmp_path))
    for path in _files(tmp_path, ".nbi"):
        _damage(path, "garbage")
    for path in _files(tmp_path, ".nbc"):
        _damage(path, "truncated")
    repaired = _run(FULL, _env(tmp_path))
    assert repaired["bits"] == first["bits"] and repaired["misses"] > 0
    again = _run(FULL, _env(tmp_path))
    assert again == {**first, "misses": 0}


def test_processes_compiling_at_once_into_an_empty_cache_all_succeed_and_lose_nothing(tmp_path):
    """Four processes, each adding the same four keys in a different order, into an empty cache folder;
    five rounds. Every process succeeds with the right values, and afterwards one process finds every
    key in the cache."""
    expected = None
    for round_ in range(5):
        cache = tmp_path / f"round{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", SMALL, str(k)], env=_env(cache),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for k in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            values = json.loads(out.strip().splitlines()[-1])["values"]
            expected = expected or values
            assert values == expected
        later = _run(SMALL, _env(cache))
        assert later["misses"] == 0 and later["hits"] == 4, f"round {round_}: {later}"
        assert not list(cache.rglob("*.tmp.*")), "a temporary file was left behind"


def test_an_unwritable_cache_folder_compiles_without_a_disk_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = _run(SMALL, _env(blocker / "cache"))
    assert out["cache"] == "NullCache" and out["hits"] == 0  # no disk cache at all, and still the right values
    assert out["values"] == _run(SMALL, _env(tmp_path / "ok"))["values"]


def test_compiling_is_announced_once_when_asked(tmp_path):
    script = ("import numpy as np\nfrom diffcore.backends import _numba_cache\n_numba_cache.set_announce(True)\n"
              "from diffcore.backends import _numba_cpu_kernels as k\n"
              "k.order_key(1.0); k.key_value(np.int64(3))\nprint('{}')\n")
    env = _env(tmp_path)
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert first.stderr.count(_numba_cache.COMPILING_MESSAGE) == 1, first.stderr
    cached = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert _numba_cache.COMPILING_MESSAGE not in cached.stderr


def test_python_api_announces_compiling_when_progress_is_shown(tmp_path):
    """diffcore.compare(progress=True) builds a Progress: a first compile then says why the call pauses."""
    script = ("import numpy as np\nfrom diffcore.progress import Progress\nProgress({shown})\n"
              "from diffcore.backends import _numba_cpu_kernels as k\n"
              "k.order_key(1.0)\nprint('{{}}')\n")
    shown = subprocess.run([sys.executable, "-c", script.format(shown=True)], env=_env(tmp_path / "a"),
                           capture_output=True, text=True, timeout=600)
    assert shown.stderr.count(_numba_cache.COMPILING_MESSAGE) == 1, shown.stderr
    hidden = subprocess.run([sys.executable, "-c", script.format(shown=False)], env=_env(tmp_path / "b"),
                            capture_output=True, text=True, timeout=600)
    assert _numba_cache.COMPILING_MESSAGE not in hidden.stderr, hidden.stderr
