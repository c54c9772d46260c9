"""``diffcore.testing.assert_close`` and the pytest plugin that attaches a failing comparison's report."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffcore.testing import DiffcoreAssertionError, assert_close  # noqa: E402

pytest_plugins = ["pytester"]


def _mlp(seed=0, eps=1e-5):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16, eps=eps), torch.nn.GELU(),
                               torch.nn.Linear(16, 3)).eval()


def _inputs():
    return {"input": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}


def test_assert_close_returns_the_passing_report():
    report = assert_close(_mlp(), _mlp(), _inputs())
    assert report.verdict == "pass"


def test_assert_close_raises_with_the_summary_and_first_divergence():
    broken = _mlp()
    with torch.no_grad():
        broken[0].weight[3] *= 3.0
    with pytest.raises(DiffcoreAssertionError, match=r"(?s)FAIL: first divergence at 0 .*first divergence: 0 "
                                                     r"\[Linear\]") as info:
        assert_close(_mlp(), broken, _inputs())
    assert info.value.report.first_divergence.name == "0"
    assert isinstance(info.value, AssertionError)


INNER_TEST = '''
import numpy as np, torch
from diffcore.testing import assert_close

def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()

def test_export_matches():
    broken = mlp()
    with torch.no_grad():
        broken[2].bias += 1.0
    assert_close(mlp(), broken, {"input": np.ones((2, 6), np.float32)})
'''


def test_the_pytest_plugin_attaches_the_report_of_a_failing_comparison(pytester, tmp_path):
    pytester.makepyfile(test_inner=INNER_TEST)
    folder = tmp_path / "reports"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--diffcore-reports", str(folder))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- diffcore -*", "HTML report: *test_inner.py*test_export_matches.html"])
    pages = list(folder.glob("*.html"))
    assert len(pages) == 1 and "first divergence" in pages[0].read_text().lower()
