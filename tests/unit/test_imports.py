"""``import diffcore`` loads NumPy at most: frameworks are imported only where they are used."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "cupy", "numba", "pynvml", "tabulate", "matplotlib", "tqdm", "tensorflow", "keras", "ai_edge_litert", "tf2onnx")


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


def test_kernels_folder_does_not_shadow_an_installed_kernels_package(tmp_path):
    """With the repository root first on sys.path, ``import kernels`` still finds another package of that
    name (transformers imports one), and the CUDA sources are still found."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    fake = tmp_path / "kernels"
    fake.mkdir()
    (fake / "__init__.py").write_text("ORIGIN = 'installed'\n")
    code = (
        "import kernels\n"
        "print(getattr(kernels, 'ORIGIN', 'shadowed'))\n"
        "from diffcore.backends.cupy_backend import kernel_source\n"
        "print('__global__' in kernel_source())\n"
    )
    env = {"PYTHONPATH": f"{root}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["installed", "True"]
