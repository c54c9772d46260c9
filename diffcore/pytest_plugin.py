"""pytest plugin (entry point ``pytest11: diffcore``): a failing ``diffcore.testing.assert_close`` attaches
its report to the test's report.

What it adds to a failing test: a "diffcore" section with the text table (shown by pytest under the
failure, like captured output), and the HTML report written to ``--diffcore-reports DIR`` (default: a
``diffcore`` folder in pytest's cache directory), whose path the section names. With pytest-html
installed the HTML is also embedded as an extra in its report. Loading the plugin imports nothing heavy.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("diffcore")
    group.addoption("--diffcore-reports", default=None, metavar="DIR",
                    help="folder for the HTML reports of failing diffcore comparisons "
                         "(default: .pytest_cache/diffcore)")


def _report_folder(config) -> Path:
    chosen = config.getoption("--diffcore-reports")
    if chosen:
        return Path(chosen)
    return Path(config.rootpath) / ".pytest_cache" / "diffcore"


def _carried_report(excinfo):
    if excinfo is None:
        return None
    return getattr(excinfo.value, "report", None) if excinfo.errisinstance(AssertionError) else None


def _write_html(config, nodeid: str, report) -> Path:
    from .files import write_text

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "report"
    path = _report_folder(config) / f"{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, report.to_html(), what="diffcore HTML report", force=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    diff = _carried_report(call.excinfo)
    if diff is None:
        return
    test_report = outcome.get_result()
    path = _write_html(item.config, item.nodeid, diff)
    test_report.sections.append(("diffcore", f"HTML report: {path}\n\n{diff.to_text(max_rows=40)}"))
    html_plugin = item.config.pluginmanager.getplugin("html")
    if html_plugin is not None:
        extras = getattr(html_plugin, "extras", None)
        if extras is not None:
            test_report.extras = getattr(test_report, "extras", []) + [extras.html(diff._repr_html_())]
