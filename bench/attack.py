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
import argparse
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_common import (FAILURES, TALLY, _fifo, _header, _mounted, _npy, _zip, cli,  # noqa: E402
                           expect_clean, make_world)
from attack_golden import attack_full_disk, attack_golden, attack_golden_kills  # noqa: E402

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
    from attack_numbers import attack_numbers

    attack_numbers(TALLY, FAILURES)
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
