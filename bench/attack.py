"""A careless or hostile user's attack run against the CLI and ``drift`` (issue 10).

Tries bad inputs and faults against every command (input archives, output paths, golden folders, trace
metadata, env diff documents, ONNX metadata, contradicting flags, SIGKILLs during ``golden record --force``,
a full disk) and numeric edge cases against ``drift`` on every host backend, and prints:

    inputs tried, clean exits (2 with one line), tracebacks, data lost, wrong numbers

A *traceback* is an exit 3, an exception escaping ``main``, or more than one stderr line on exit 2. *Data
lost* is a file or golden that was there before and is changed or gone after a refused or interrupted
command. A *wrong number* is a statistic outside 1e-9 (relative) of a 60-digit decimal reference, and outside 1e-12 of
the largest magnitude it is computed from (float64 rounding of cancelling data is not an error).

Usage: ``python bench/attack.py [--out bench/results/attack-YYYYMMDD.txt]`` (root for the tmpfs cases).
"""
from __future__ import annotations

import argparse
import contextlib
import decimal
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcore.cli import main  # noqa: E402

TALLY = {"tried": 0, "clean": 0, "expected_ok": 0, "tracebacks": 0, "data_lost": 0, "wrong_numbers": 0}
FAILURES: list = []


# ------------------------------------------------------------------------------------------ plumbing

def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    except BaseException as exc:  # noqa: BLE001  (escaping main is exactly what is counted)
        return -1, out.getvalue(), f"ESCAPED {type(exc).__name__}: {exc}"
    return code, out.getvalue(), err.getvalue()


def expect_clean(name: str, *argv, allow=(2,), guard=None) -> None:
    """Run the CLI; count a clean exit (one line), or a traceback; ``guard`` checks no data was lost."""
    TALLY["tried"] += 1
    before = _snapshot(guard)
    code, _, err = cli(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2 and len(lines) == 1 and lines[0].startswith("diffcore: error:"):
        TALLY["clean"] += 1
    elif code in allow and code != 2:
        TALLY["expected_ok"] += 1
    else:
        TALLY["tracebacks"] += 1
        FAILURES.append(f"traceback/unclean: {name}: exit {code}: {err.strip()[:300]}")
    _check_guard(name, guard, before)


def _snapshot(guard):
    if guard is None:
        return None
    return {str(p): (_digest(p)) for p in guard}


def _digest(path):
    path = Path(path)
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return ("dir", tuple(sorted((n, _digest(path / n)) for n in os.listdir(path))))
    if not path.exists():
        return None
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        return ("special", stat.S_IFMT(mode))
    return ("file", path.read_bytes())


def _check_guard(name, guard, before) -> None:
    if guard is None:
        return
    after = _snapshot(guard)
    if after != before:
        TALLY["data_lost"] += 1
        FAILURES.append(f"data lost: {name}: {[k for k in before if before[k] != after.get(k)]}")


# ------------------------------------------------------------------------------------------ fixtures

def make_world(root: Path) -> dict:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, root / "m.onnx")
    np.savez(root / "in.npz", x=np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32))
    shutil.copyfile(root / "in.npz", root / "in_pristine.npz")  # later steps must not depend on in.npz surviving
    return {"root": root, "model": str(root / "m.onnx"), "inputs": str(root / "in.npz"),
            "weight": numpy_helper.to_array(weight)}


def _zip(path, members) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header(shape, descr="<f4", payload=b"\0" * 32) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


# ------------------------------------------------------------------------------------------ attacks

def attack_inputs(w, tmp: Path) -> None:
    bad = {
        "garbage": b"hello", "empty": b"", "truncated-zip": b"PK\x03\x04\x14\x00", "pickle": pickle.dumps({"x": 1}),
        "npy": _npy(np.ones(3)), "png-ish": b"\x89PNG\r\n\x1a\n" + b"\0" * 50,
    }
    for name, data in bad.items():
        (tmp / f"{name}.npz").write_bytes(data)
    archives = {
        "strings": {"x.npy": _npy(np.array(["a", "b"]))}, "bytes": {"x.npy": _npy(np.array([b"a"]))},
        "object-header": {"x.npy": _header((2,), "|O")}, "records": {"x.npy": _npy(np.zeros(2, "f4,i4"))},
        "dates": {"x.npy": _npy(np.array(["2020-01-01"], "datetime64[D]"))},
        "raw-pickle-member": {"x": pickle.dumps([1])}, "pickle-named-npy": {"x.npy": pickle.dumps([1])},
        "2^40-elements": {"x.npy": _header((1 << 40,))}, "2^62-bytes": {"x.npy": _header((1 << 30, 1 << 30), "<f8")},
        "negative-dim": {"x.npy": _header((-1,))}, "header-too-short": {"x.npy": _header((4, 4))},
        "bad-header-text": {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}   \n"},
        "npy-v9": {"x.npy": b"\x93NUMPY\x09\x00" + b"\0" * 20}, "no-arrays": {},
        "wrong-name": {"z.npy": _npy(np.ones((2, 4), np.float32))},
        "wrong-shape": {"x.npy": _npy(np.ones((3, 5), np.float32))},
        "int-for-float": {"x.npy": _npy(np.ones((2, 4), np.int64))},
        "bool-input": {"x.npy": _npy(np.ones((2, 4), bool))},
        "complex": {"x.npy": _npy(np.ones((2, 4), np.complex64))},
        "dir-member": {"a/": b"", "x.npy": _npy(np.ones((2, 4), np.float32))},
        "zero-size": {"x.npy": _npy(np.ones((0, 4), np.float32))},
        "unicode-name": {"ü🙂.npy": _npy(np.ones((2, 4), np.float32))},
    }
    for name, members in archives.items():
        path = _zip(tmp / f"{name}.npz", members)
        expect_clean(f"inputs {name}", "compare", w["model"], w["model"], "--inputs", path, allow=(2,),
                     guard=[path])
    for name in bad:
        path = tmp / f"{name}.npz"
        expect_clean(f"inputs {name}", "compare", w["model"], w["model"], "--inputs", path, guard=[path])
    bomb = _zip(tmp / "bomb.npz", {f"x{i}.npy": _npy(np.zeros(1 << 22, np.float32)) for i in range(8)})
    os.environ["DIFFCORE_MAX_INPUT_BYTES"] = "32M"
    expect_clean("zip bomb over the limit", "compare", w["model"], w["model"], "--inputs", bomb)
    os.environ["DIFFCORE_MAX_INPUT_BYTES"] = "nonsense"
    expect_clean("limit variable nonsense", "compare", w["model"], w["model"], "--inputs", w["inputs"])
    del os.environ["DIFFCORE_MAX_INPUT_BYTES"]
    for name, path in (("directory", tmp), ("missing", tmp / "nope.npz"), ("fifo", _fifo(tmp / "in.fifo"))):
        expect_clean(f"inputs {name}", "compare", w["model"], w["model"], "--inputs", path)


def _fifo(path: Path) -> Path:
    if not path.exists():
        os.mkfifo(path)
    return path


def attack_big_endian(w, tmp: Path) -> None:
    """Not a refusal: a big-endian input must give the same (correct) outputs as the native one."""
    from diffcore.deploy import load_golden

    x = np.load(w["inputs"])["x"]
    path = tmp / "be.npz"
    np.savez(path, x=x.astype(">f4"))
    for command in (["compare", w["model"], w["model"], "--inputs", path],):
        TALLY["tried"] += 1
        code, out, err = cli(*command)
        if code == 0:
            TALLY["expected_ok"] += 1
        else:
            TALLY["tracebacks" if code != 2 else "wrong_numbers"] += 1
            FAILURES.append(f"big-endian compare: exit {code} {err[:200]}")
    TALLY["tried"] += 1
    code, _, err = cli("golden", "record", w["model"], "--inputs", path, "--out", tmp / "be_golden")
    golden = load_golden(tmp / "be_golden") if code == 0 else None
    want = np.maximum(x.astype(np.float32) @ w["weight"], 0)
    if golden is not None and np.allclose(golden.outputs["y"], want, rtol=1e-6) and \
            np.array_equal(golden.inputs["x"], x):
        TALLY["expected_ok"] += 1
    else:
        TALLY["wrong_numbers"] += 1
        FAILURES.append(f"big-endian golden stores wrong numbers (exit {code}: {err[:200]})")


def attack_outputs(w, tmp: Path) -> None:
    victim = tmp / "victim.txt"
    victim.write_text("precious")
    link = tmp / "link.json"
    if not link.exists():
        link.symlink_to(victim)
    fifo = _fifo(tmp / "out.fifo")
    existing = tmp / "existing.json"
    existing.write_text("keep me")
    hard = tmp / "hard.npz"
    if not hard.exists():
        os.link(w["inputs"], hard)
    node = tmp / "node"
    if os.geteuid() == 0 and not node.exists():
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    targets = {
        "symlink --force": (["--json", link, "--force"], [victim, link]),
        "fifo --force": (["--json", fifo, "--force"], [fifo]),
        "device --force": (["--json", node, "--force"], [node]) if node.exists() else None,
        "directory --force": (["--json", tmp, "--force"], None),
        "existing without --force": (["--json", existing], [existing]),
        "json == html": (["--json", tmp / "same.out", "--html", tmp / "same.out", "--force"], None),
        "json == inputs": (["--json", w["inputs"], "--force"], [w["inputs"]]),
        "html == inputs via hard link": (["--html", hard, "--force"], [w["inputs"]]),
        "json == model": (["--json", w["model"], "--force"], [w["model"]]),
        "name too long": (["--json", tmp / ("n" * 400)], None),
        "missing folder": (["--json", tmp / "no" / "such" / "r.json"], None),
        "empty name": (["--json", ""], None),
        "trailing slash": (["--json", str(tmp / "r.json") + "/"], None),
        "inside a file": (["--json", existing / "r.json"], [existing]),
    }
    for name, spec in targets.items():
        if spec is None:
            continue
        flags, guard = spec
        expect_clean(f"output {name}", "compare", w["model"], w["model"], "--inputs", w["inputs"], *flags,
                     guard=guard)
    expect_clean("capture --out == inputs", "capture", w["model"], "--inputs", w["inputs"], "--out", w["inputs"],
                 "--force", guard=[w["inputs"]])
    if node.exists():  # a private device node, never /dev/null: a run against unfixed code would replace it
        expect_clean("env --out device", "env", "--out", node, "--force", guard=[node])
    expect_clean("env --out fifo", "env", "--out", fifo, "--force", guard=[fifo])
    with _mounted(tmp / "ro", "size=64k,ro") as point:
        if point is not None:
            expect_clean("read-only folder", "compare", w["model"], w["model"], "--inputs", w["inputs"],
                         "--json", point / "r.json")
            expect_clean("golden into read-only folder", "golden", "record", w["model"], "--inputs", w["inputs"],
                         "--out", point / "g")


@contextlib.contextmanager
def _mounted(point: Path, options: str):
    point.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if done.returncode != 0:
        print(f"  (skipped {options} tmpfs cases: cannot mount here)")
        yield None
        return
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def attack_flags(w, tmp: Path) -> None:
    cases = [
        ["compare", w["model"], w["model"], "--test-autocast", "float16"],
        ["compare", w["model"], w["model"], "--atol", "1e-3"],
        ["compare", w["model"], w["model"], "--atol", "nan", "--rtol", "0"],
        ["compare", w["model"], w["model"], "--atol", "-1", "--rtol", "0"],
        ["compare", w["model"], w["model"], "--max-rows", "-3"],
        ["compare", w["model"], w["model"], "--memory-budget-mb", "0"],
        ["compare", w["model"], w["model"], "--device", "tpu"],
        ["compare", w["model"], w["model"], "--bogus"],
        ["compare", w["model"], tmp / "missing.onnx"],
        ["compare", w["model"], "not_a_module_at_all:factory"],
        ["compare", w["model"], w["inputs"]],
        ["golden", "check", w["model"], tmp / "no-golden"],
        ["golden", "check", w["model"], w["inputs"]],
        ["golden", "record", w["model"], "--inputs", w["inputs"], "--out", w["inputs"]],
        ["golden", "record", w["model"], "--inputs", w["inputs"], "--out", tmp / "gk", "--key-file", tmp / "none"],
        ["validate", w["model"], "--golden", tmp / "no-golden"],
        ["env", "diff", tmp / "a-missing.json", tmp / "b-missing.json"],
    ]
    for argv in cases:
        expect_clean("flags " + " ".join(map(str, argv[:1] + argv[3:])), *argv, allow=(2,))


def attack_documents(w, tmp: Path) -> None:
    good_env = tmp / "env.json"
    cli("env", "--out", good_env, "--force")
    docs = {
        "deep-100000": "[" * 100000 + "]" * 100000, "deep-in-env": '{"environment": ' + "[" * 900 + "]" * 900 + "}",
        "top-level-list": "[1, 2]", "number": "5", "NaN": "NaN", "huge-int": "1" * 5000, "bad-utf8": b"\xff\xfe{",
        "empty": "", "truncated": '{"schema": "diffcore.env/1", "python"', "no-manifest": '{"a": 1}',
        "env-is-string": '{"environment": "x"}', "dup-keys": '{"schema": "diffcore.env/1", "schema": 5}',
    }
    for name, text in docs.items():
        path = tmp / f"doc-{name}.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        expect_clean(f"env diff {name}", "env", "diff", path, good_env, allow=(0, 1, 2))


def attack_traces(w, tmp: Path) -> None:
    from diffcore.capture.trace import META_KEY

    trace = tmp / "t.npz"
    cli("capture", w["model"], "--inputs", tmp / "in_pristine.npz", "--out", trace, "--force")
    with np.load(trace) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays[META_KEY].tobytes())
    f32 = next(i for i, r in enumerate(meta["records"]) if r["dtype"] == "float32")
    edits = {
        "records-int": {**meta, "records": 1}, "inputs-dict": {**meta, "inputs": {}},
        "order-string": {**meta, "records": [{**r, "order": "x"} for r in meta["records"]]},
        "shape-strings": {**meta, "records": [{**r, "shape": ["a"]} for r in meta["records"]]},
        "meta-dict-list": {**meta, "records": [{**r, "meta": [1]} for r in meta["records"]]},
        "relabel-bfloat16": {**meta, "records": [{**r, "dtype": "bfloat16"} if i == f32 else r
                                                 for i, r in enumerate(meta["records"])]},
        "relabel-float64": {**meta, "records": [{**r, "dtype": "float64"} if i == f32 else r
                                                for i, r in enumerate(meta["records"])]},
        "unknown-dtype": {**meta, "records": [{**r, "dtype": "float8"} for r in meta["records"]]},
        "schema-other": {**meta, "schema": "diffcore.trace/9"},
        "deep": "[" * 100000 + "]" * 100000, "list": [1, 2], "null": None,
    }
    for name, value in edits.items():
        text = value if isinstance(value, str) else json.dumps(value)
        bad = dict(arrays)
        bad[META_KEY] = np.frombuffer(text.encode(), np.uint8)
        path = tmp / f"trace-{name}.npz"
        np.savez(path, **bad)
        expect_clean(f"trace {name}", "compare", path, w["model"], guard=[path])
    no_meta = {k: v for k, v in arrays.items() if k != META_KEY}
    np.savez(tmp / "trace-no-meta.npz", **no_meta)
    expect_clean("trace without metadata", "compare", tmp / "trace-no-meta.npz", w["model"])
    np.savez(tmp / "trace-meta-f32.npz", **{**arrays, META_KEY: np.ones(3, np.float32)})
    expect_clean("trace metadata not uint8", "compare", tmp / "trace-meta-f32.npz", w["model"])


def attack_onnx_scopes(w, tmp: Path) -> None:
    import onnx

    for i, value in enumerate(["5", "{'a': 1}", "[1, 2]", "[" * 3000 + "]" * 3000, "__import__('os')", "", "None"]):
        model = onnx.load(w["model"])
        prop = model.graph.node[0].metadata_props.add()
        prop.key, prop.value = "pkg.torch.onnx.name_scopes", value
        path = tmp / f"scoped{i}.onnx"
        onnx.save(model, path)
        expect_clean(f"onnx name scopes {value[:12]!r}", "compare", path, path, "--inputs", w["inputs"])


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


def attack_stdout(w) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for redirect in (">&-", "1</dev/null"):
        TALLY["tried"] += 1
        done = subprocess.run(f"{sys.executable} -m diffcore env {redirect}", shell=True, env=env,
                              stderr=subprocess.PIPE, text=True)
        lines = done.stderr.strip().splitlines()
        if done.returncode == 2 and len(lines) == 1:
            TALLY["clean"] += 1
        else:
            TALLY["tracebacks"] += 1
            FAILURES.append(f"stdout {redirect}: exit {done.returncode}: {done.stderr[:200]}")


# ------------------------------------------------------------------------------------------ numbers

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


def attack_numbers() -> None:
    import diffcore

    for name, ref, test in numeric_cases():
        want = _exact(ref, test)
        values = np.abs(np.concatenate([ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()]))
        values = values[np.isfinite(values)]
        scale = D.create_decimal(float(values.max())) if values.size else decimal.Decimal(0)
        for backend in ("numpy", "numba-cpu"):
            TALLY["tried"] += 1
            try:
                stats = diffcore.drift(ref, test, backend=backend)
            except Exception as exc:  # noqa: BLE001
                TALLY["tracebacks"] += 1
                FAILURES.append(f"drift {name} [{backend}]: {type(exc).__name__}: {exc}")
                continue
            wrong = [k for k, v in want.items() if not _agrees(getattr(stats, k), v, scale)]
            if wrong:
                TALLY["wrong_numbers"] += 1
                shown = ", ".join(f"{k}={getattr(stats, k)!r} (exact {float(want[k]):.6g})" for k in wrong)
                FAILURES.append(f"drift {name} [{backend}]: wrong {shown}")
            else:
                TALLY["expected_ok"] += 1


# ------------------------------------------------------------------------------------------ main

def run_all(trials: int) -> str:
    with tempfile.TemporaryDirectory(prefix="diffcore-attack-") as folder:
        root = Path(folder)
        w = make_world(root)
        for step in (attack_inputs, attack_big_endian, attack_outputs, attack_flags, attack_documents,
                     attack_traces, attack_onnx_scopes, attack_golden, attack_full_disk):
            started = time.perf_counter()
            step(w, root)
            shutil.copyfile(root / "in_pristine.npz", root / "in.npz")  # a lost inputs file is counted once
            print(f"  {step.__name__}: done in {time.perf_counter() - started:.1f} s, tried {TALLY['tried']} so far",
                  file=sys.stderr)
        attack_golden_kills(w, root, trials)
        attack_stdout(w)
    attack_numbers()
    lines = [f"inputs tried: {TALLY['tried']}",
             f"clean exits (2 with one line): {TALLY['clean']}",
             f"accepted and right (exit 0/1 where the input is valid, numbers checked): {TALLY['expected_ok']}",
             f"tracebacks: {TALLY['tracebacks']}", f"data lost: {TALLY['data_lost']}",
             f"wrong numbers: {TALLY['wrong_numbers']}",
             f"(golden record --force runs SIGKILLed before finishing: {TALLY.get('killed mid-record', 0)} of "
             f"{trials})"]
    return "\n".join(lines + ["", "failures:"] + (FAILURES or ["(none)"])) + "\n"


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the result to this file")
    parser.add_argument("--kill-trials", type=int, default=20)
    args = parser.parse_args()
    text = run_all(args.kill_trials)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0 if not (TALLY["tracebacks"] or TALLY["data_lost"] or TALLY["wrong_numbers"]) else 1


if __name__ == "__main__":
    sys.exit(main_())
