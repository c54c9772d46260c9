"""What bench/attack.py's parts share: the tally, running the CLI in-process and judging its exit, the
tiny model the attacks run, archive builders, FIFOs and tmpfs mounts."""
from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import stat
import subprocess
import sys
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


def _fifo(path: Path) -> Path:
    if not path.exists():
        os.mkfifo(path)
    return path


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


