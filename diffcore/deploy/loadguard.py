"""Load (and run once) an ONNX model in a child process first, so that an ONNX Runtime crash is reported.

A native crash (a segmentation fault inside an ORT graph optimizer, say) kills the process that loads the
model: ``validate`` would die with exit status 139 and no message. The child process takes the crash
instead; ``validate`` reports the signal and, where diffcore knows the cause, what it is and how diffcore
runs the model anyway (``KNOWN_CAUSES``: a crash that goes away with one optimizer disabled).

Only crashes and hangs are this module's concern: a Python-level error in the child (ORT refusing the
model, inputs that do not fit) is left to the in-process run, which reports it the usual way.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

__all__ = ["KNOWN_CAUSES", "Crash", "diagnose", "load_in_child"]

DEFAULT_TIMEOUT_S = 600.0

# Optimizers whose crash diffcore knows: (optimizer, what diffcore knows about it).
KNOWN_CAUSES = (("NchwcTransformer", "NchwcTransformer on float16 graphs, microsoft/onnxruntime#15494"),)

_CHILD = r"""
import json, sys
import onnxruntime as ort
path, providers, disabled, inputs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
options = ort.SessionOptions()
options.log_severity_level = 3
try:
    session = ort.InferenceSession(path, options, providers=[tuple(p) if isinstance(p, list) else p
                                                             for p in providers], disabled_optimizers=disabled)
    if inputs:
        import numpy as np
        with np.load(inputs) as data:
            session.run(None, {k: data[k] for k in data.files})
except Exception as exc:
    print(str(exc)[:2000], file=sys.stderr)
    sys.exit(3)
"""


@dataclass
class Crash:
    """How the child process died: ``signal`` (e.g. "SIGSEGV"), or ``timeout`` seconds without finishing."""

    returncode: int | None
    signal: str = ""
    timeout: float | None = None
    stderr: str = ""

    def words(self) -> str:
        if self.timeout is not None:
            return f"did not finish loading and running within {self.timeout:g} s"
        return f"killed by {self.signal} (exit status {128 + abs(self.returncode)})" if self.signal else \
            f"exit status {self.returncode}"


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def load_in_child(path: str, providers=None, disabled_optimizers=(), inputs=None,
                  timeout: float = DEFAULT_TIMEOUT_S, code: str | None = None) -> Crash | None:
    """Load ``path`` with ONNX Runtime in a child Python (and run it once on ``inputs`` when given);
    None when the child did not crash or hang, else how it died. ``code``: the child's program (default
    ``_CHILD``, read at call time)."""
    providers = [list(p) if isinstance(p, tuple) else p for p in providers or ["CPUExecutionProvider"]]
    with tempfile.TemporaryDirectory(prefix="diffcore-load-") as folder:
        feed = ""
        if inputs:
            import numpy as np

            feed = os.path.join(folder, "inputs.npz")
            np.savez(feed, **{k: np.asarray(v) for k, v in inputs.items()})
        argv = [sys.executable, "-c", code or _CHILD, os.fspath(path), json.dumps(providers),
                json.dumps(list(disabled_optimizers)), feed]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Crash(None, timeout=timeout)
    if done.returncode < 0:
        return Crash(done.returncode, _signal_name(done.returncode), stderr=done.stderr[-2000:])
    return None


def diagnose(path: str, providers=None, inputs=None, timeout: float = DEFAULT_TIMEOUT_S,
             code: str | None = None) -> tuple[Crash | None, list, str]:
    """(crash with default options or None, optimizers that avoid it, what diffcore knows of the cause).

    After a crash, each optimizer of ``KNOWN_CAUSES`` is tried disabled; the first that lets the child
    load and run gives the workaround and the known cause. ([], "") when none helps."""
    crash = load_in_child(path, providers, (), inputs, timeout, code)
    if crash is None or crash.timeout is not None:
        return crash, [], ""
    for optimizer, cause in KNOWN_CAUSES:
        if load_in_child(path, providers, (optimizer,), inputs, timeout, code) is None:
            return crash, [optimizer], cause
    return crash, [], ""
