"""``import diffcore`` loads NumPy at most: frameworks are imported only where they are used."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "cupy", "numba", "pynvml", "tabulate", "matplotlib", "tqdm")


@pytest.mark.parametrize("module, also", [("diffcore", ()), ("diffcore.deploy", ("tokenizers",))])
def test_importing_diffcore_loads_no_framework(module, also):
    code = (
        f"import sys, {module}\n"
        f"heavy = [m for m in {HEAVY + also!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded: {out.stdout.strip()}"


def test_missing_dependency_names_the_extra():
    from diffcore import MissingDependencyError
    from diffcore._deps import require

    try:
        require("diffcore_no_such_module_xyz", "testing")
    except MissingDependencyError as exc:
        assert "testing" in str(exc) and "pip install" in str(exc)
    else:
        raise AssertionError("require() did not raise")
