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


def script_call(module, args, kwargs):
    """(args, kwargs) for a TorchScript submodule called with the eager module's arguments.

    A traced forward keeps only the tensors the trace used, under names of its own
    (``forward(self, Tensor input_ids, Tensor input)`` for BertEmbeddings called with ``input_ids=...,
    token_type_ids=..., position_ids=None, ...``): where the eager names do not fit its schema, the call's
    tensors are passed positionally, in order, when their number is the schema's.
    """
    names = [a.name for a in module.forward.schema.arguments[1:]]
    if all(k in names for k in kwargs) and len(args) <= len(names):
        return args, kwargs
    import torch

    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    if len(tensors) == len(names):
        return tuple(tensors), {}
    raise DiffcoreError(f"the TorchScript module takes ({', '.join(names)}), not the eager call's "
                        f"{len(tensors)} tensor(s)")


def submodule_at(root, path: str):
    """``root.get_submodule(path)``, also inside TorchScript modules (which refuse ``get_submodule``).

    Raises:
        AttributeError: no module at ``path``.
    """
    import torch

    module = root
    for name in path.split(".") if path else ():
        child = getattr(module, name, None)
        if not isinstance(child, torch.nn.Module):
            raise AttributeError(f"no submodule {name!r} in {path!r}")
        module = child
    return module
