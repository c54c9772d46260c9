"""Progress with tqdm.auto: one bar per phase, on where a person watches, silent when piped (issue 17, 5)."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import diffcore
from diffcore.progress import Progress, in_notebook, wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_off_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not in_notebook() and wanted(None) is False
    assert wanted(True) is True and wanted(False) is False


def test_auto_is_on_when_stderr_is_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert wanted(None) is True


def test_one_bar_per_phase_written_to_stderr(monkeypatch):
    pytest.importorskip("tqdm")
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    bars = Progress(None)
    with bars.phase("load", total=2) as bar:
        bar.update()
        bar.update()
    assert list(bars.iterate(range(3), "capture", unit="chunk")) == [0, 1, 2]
    assert bars.shown == ["load", "capture"]
    assert "diffcore: load" in err.getvalue() and "diffcore: capture" in err.getvalue()


def _torch_pair():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    return model, {"input": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}


def test_compare_prints_nothing_when_stderr_is_not_a_terminal(capfd):
    model, inputs = _torch_pair()
    report = diffcore.compare(model, model, inputs, test_dtype="float16")
    assert report.layers and "diffcore:" not in capfd.readouterr().err


def test_compare_shows_the_phases_when_asked(capfd):
    pytest.importorskip("tqdm")
    model, inputs = _torch_pair()
    diffcore.compare(model, model, inputs, test_dtype="float16", progress=True)
    err = capfd.readouterr().err
    for phase in ("load", "probe", "capture"):
        assert f"diffcore: {phase}" in err


NOTEBOOK_CELL = """
import sys, diffcore.progress as p
bars = p.Progress(None)
with bars.phase("capture", total=1) as bar:
    bar.update()
print(p.in_notebook(), p.wanted(None), type(bar).__module__, bars.shown)
"""


def test_tqdm_auto_draws_a_widget_in_a_notebook_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("tqdm")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CELL)]
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "True True" in text and "['capture']" in text
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]  # no red blocks
    # tqdm.notebook's widget when ipywidgets is there; else diffcore's text bar on stdout
    assert "tqdm.notebook" in text or any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                           for o in outputs) or "tqdm.std" in text


def test_a_note_is_its_own_line_while_a_bar_runs(monkeypatch):
    pytest.importorskip("tqdm")
    from diffcore.progress import note

    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(True).phase("capture", total=2) as bar:
        bar.update()
        note("compiling kernels (first run only)")
        bar.update()
    assert "\ncompiling kernels (first run only)\n" in err.getvalue().replace("\r", "\n")
