"""``DiffReport.diff`` / ``diffcore report diff``: did my fix help?"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffcore  # noqa: E402
from diffcore.report.model import DiffReport  # noqa: E402


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 16),
                               torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)).eval()


def _broken():
    net = _net()
    with torch.no_grad():
        net[2].weight[:4] *= 4.0  # the planted bug, in the middle Linear
    return net


@pytest.fixture(scope="module")
def reports():
    inputs = {"input": np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)}
    before = diffcore.compare(_net(), _broken(), inputs)
    after = diffcore.compare(_net(), _net(), inputs)
    assert before.verdict == "fail" and after.verdict == "pass"
    return before, after


def test_a_fix_shows_the_first_divergence_gone_and_the_layers_fixed(reports):
    before, after = reports
    change = before.diff(after)
    assert change.first_before == "2" and change.first_after is None
    assert "first divergence gone (was 2)" in change.summary
    assert change.count("fixed") >= 1 and change.count("regressed") == 0
    assert change.exit_code == 0
    fixed = {r.name for r in change.rows if r.change == "fixed"}
    assert "2" in fixed


def test_a_regression_exits_1(reports):
    before, after = reports
    change = after.diff(before)
    assert change.regressed and change.exit_code == 1
    assert "first divergence appeared at 2" in change.summary
    assert "REGRESSED" in change.to_text()


def test_reports_diff_after_a_json_round_trip(reports):
    before, after = reports
    again = DiffReport.from_json(before.to_json()).diff(DiffReport.from_json(after.to_json()))
    assert again.summary == before.diff(after).summary


def test_reports_of_different_schemas_are_refused(reports):
    before, after = reports
    other = DiffReport.from_json(after.to_json())
    other.schema_version = "diffcore.report/0"
    with pytest.raises(diffcore.DiffcoreError, match="different schemas"):
        before.diff(other)
