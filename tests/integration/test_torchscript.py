"""A TorchScript file (torch.jit.save) is a model side: compared at its outputs against the eager module; a
.pt that is not TorchScript is refused in one line."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.errors import DiffcoreError  # noqa: E402


def _eager():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()


def _x():
    return {"input": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}


@pytest.mark.parametrize("make", [lambda m: torch.jit.script(m), lambda m: torch.jit.trace(m, torch.zeros(3, 4))],
                         ids=["scripted", "traced"])
def test_a_saved_torchscript_file_matches_its_eager_module(tmp_path, make):
    eager = _eager()
    path = tmp_path / "model.pt"
    torch.jit.save(make(eager), str(path))
    report = diffcore.compare(eager, str(path), _x())
    assert report.verdict == "pass", report.summary


def test_a_torchscript_file_with_a_changed_weight_diverges(tmp_path):
    eager = _eager()
    scripted = torch.jit.script(_eager())
    with torch.no_grad():
        scripted[2].weight.mul_(1.5)
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    assert diffcore.compare(eager, str(path), _x()).verdict == "fail"


def test_a_pickled_state_dict_is_refused_as_not_torchscript(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_eager().state_dict(), str(path))
    with pytest.raises(DiffcoreError, match=r"is not a TorchScript file .*state_dict holds weights only"):
        diffcore.compare(_eager(), str(path), _x())
