"""The golden-folder half of bench/attack.py: sealed manifests with wrong types, damaged files, folders
holding user files, wrong keys, SIGKILLs during ``golden record --force``, and a full disk."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from attack_common import FAILURES, TALLY, _mounted, cli, expect_clean, main

def attack_golden(w, tmp: Path) -> None:
    try:
        from diffcore.deploy.golden_store import seal_of
    except ImportError:  # an older diffcore, for a before/after run
        from diffcore.deploy.golden import _seal as seal_of

    golden = tmp / "golden"
    cli("golden", "record", w["model"], "--inputs", w["inputs"], "--out", golden, "--force")
    edits = {
        "size-string": lambda m: m["files"]["inputs.npz"].update(size="x"),
        "sha-int": lambda m: m["files"]["outputs.npz"].update(sha256=5),
        "files-list": lambda m: m.update(files=[]), "inputs-null": lambda m: m.update(inputs=None),
        "shape-dict": lambda m: m["outputs"][0].update(shape={}),
        "path-escape": lambda m: m["files"].update({"../x": {"sha256": "0" * 64, "size": 0}}),
        "array-name-escape": lambda m: m["inputs"][0].update(array="../../x"),
        "tolerance-string": lambda m: m.update(tolerance={"atol": "1", "rtol": "1"}),
        "texts-ints": lambda m: m.update(texts=[1, 2]),
    }
    for name, edit in edits.items():
        copy = tmp / f"golden-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(golden, copy)
        meta = json.loads((copy / "golden.json").read_text())
        edit(meta)
        meta["seal"] = seal_of(meta)
        (copy / "golden.json").write_text(json.dumps(meta))
        expect_clean(f"golden sealed {name}", "golden", "check", w["model"], copy)
    for name, damage in {"garbage-json": b"{{", "empty-json": b"", "deep-json": b"[" * 100000}.items():
        copy = tmp / f"golden-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(golden, copy)
        (copy / "golden.json").write_bytes(damage)
        expect_clean(f"golden {name}", "golden", "check", w["model"], copy)
    copy = tmp / "golden-truncated"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(golden, copy)
    (copy / "outputs.npz").write_bytes((copy / "outputs.npz").read_bytes()[:40])
    expect_clean("golden truncated outputs", "golden", "check", w["model"], copy)
    (golden / "mine.txt").write_text("user file")
    expect_clean("golden --force over a folder with user files", "golden", "record", w["model"], "--inputs",
                 w["inputs"], "--out", golden, "--force", guard=[golden])
    os.unlink(golden / "mine.txt")
    expect_clean("golden without --force", "golden", "record", w["model"], "--inputs", w["inputs"], "--out",
                 golden, guard=[golden])
    key = tmp / "key"
    key.write_text("k1")
    cli("golden", "record", w["model"], "--inputs", w["inputs"], "--out", tmp / "keyed", "--key-file", key,
        "--force")
    other = tmp / "key2"
    other.write_text("k2")
    expect_clean("golden check with the wrong key", "golden", "check", w["model"], tmp / "keyed", "--key-file",
                 other)


def attack_golden_kills(w, tmp: Path, trials: int) -> None:
    """SIGKILL `golden record --force` at random moments: the golden must stay whole (old or new)."""
    from diffcore import env
    from diffcore.deploy import load_golden

    manifest = env.collect()
    env.collect = lambda *a, **k: manifest  # forked children skip the package-metadata scan
    out = tmp / "killed"
    inputs = [tmp / "ka.npz", tmp / "kb.npz"]
    for i, path in enumerate(inputs):
        np.savez(path, x=np.full((2, 4), float(i + 1), np.float32))
    start = time.perf_counter()
    _fork_record(w, inputs[0], out, wait=True)
    duration = time.perf_counter() - start
    rng = random.Random(7)
    for trial in range(trials):
        TALLY["tried"] += 1
        TALLY["killed mid-record"] = TALLY.get("killed mid-record", 0) + _fork_record(
            w, inputs[trial % 2 == 0], out, kill_after=rng.uniform(0, 1.3 * duration))
        try:
            golden = load_golden(out)
            x = golden.inputs["x"]
            whole = np.all(x == x.flat[0]) and np.allclose(golden.outputs["y"], np.maximum(x @ w["weight"], 0))
            leftovers = [n for n in os.listdir(tmp) if n.startswith(".killed.diffcore-")]
        except Exception as exc:  # noqa: BLE001
            whole, leftovers = False, [repr(exc)]
        if whole and not leftovers:
            TALLY["expected_ok"] += 1
        else:
            TALLY["data_lost"] += 1
            FAILURES.append(f"golden kill trial {trial}: whole={whole} leftovers={leftovers}")


def _fork_record(w, inputs, out, wait=False, kill_after=None) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os._exit(main(["golden", "record", w["model"], "--inputs", str(inputs), "--out", str(out), "--force",
                           "--traces"]))
        finally:
            os._exit(99)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return int(os.WIFSIGNALED(status))


def attack_full_disk(w, tmp: Path) -> None:
    with _mounted(tmp / "small", "size=256k") as point:
        if point is None:
            return
        out = point / "g"
        cli("golden", "record", w["model"], "--inputs", w["inputs"], "--out", out, "--traces")
        report = point / "r.json"
        report.write_text("old report")
        free = os.statvfs(point).f_bavail * os.statvfs(point).f_frsize
        (point / "filler").write_bytes(b"\0" * max(free - 4096, 0))
        expect_clean("golden --force on a full disk", "golden", "record", w["model"], "--inputs", w["inputs"],
                     "--out", out, "--force", "--traces", guard=[out])
        expect_clean("report --force on a full disk", "compare", w["model"], w["model"], "--inputs", w["inputs"],
                     "--html", report, "--force", guard=[report])


