"""Loading a TorchScript file (``torch.jit.save``: traced or scripted) as a model side.

The loaded ScriptModule is run by TorchScriptRunner (torchscript_runner.py), which reads its submodules'
outputs through its graph (ScriptModules take no hooks). A ``.pt`` that is not TorchScript (a
pickled state_dict or a whole pickled nn.Module from ``torch.save``) is a user error, said in one line.
"""
from __future__ import annotations

import zipfile

from ..errors import DiffcoreError

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".torchscript")


def _is_torchscript_archive(path: str) -> bool:
    """torch.jit.save writes a zip holding a ``code/`` folder; torch.save's zip has only data.pkl and data/."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_torchscript(path: str, role: str):
    """The ScriptModule saved at ``path``, in eval mode; DiffcoreError when the file is not TorchScript."""
    if not zipfile.is_zipfile(path):
        raise DiffcoreError(f"{role} {path} is not a TorchScript file: torch.jit.save writes a zip archive and "
                            "this is none (a truncated or corrupt file, or another format)")
    if not _is_torchscript_archive(path):
        raise DiffcoreError(f"{role} {path} is not a TorchScript file (torch.jit.save); a torch.save checkpoint "
                            "such as a state_dict holds weights only: pass path/file.py:factory that builds the "
                            "module and loads them")
    import torch

    try:
        module = torch.jit.load(path, map_location="cpu")
    except RuntimeError as exc:
        raise DiffcoreError(f"{role} {path}: torch.jit.load failed: {str(exc).splitlines()[0]}") from None
    return module.eval()
