"""``diffcore report diff BEFORE.json AFTER.json``: what changed between two saved reports.

Exit 0 when nothing regressed, 1 when anything did (a layer, or the verdict), 2 for a file that is not a
diffcore report (missing, not JSON, or not valid under the published report schema).
"""
from __future__ import annotations

import sys

from .files import input_paths

__all__ = ["run_report"]


def run_report(args) -> int:
    """Dispatch ``diffcore report <command>`` (only ``diff`` today)."""
    return _report_diff(args)


def _report_diff(args) -> int:
    from ..report.diff import diff_reports, load_report
    from .outputs import Outputs

    outputs = Outputs({"--json": (args.json, "diffcore.report-diff/1")},
                      input_paths(**{"BEFORE.json": args.before, "AFTER.json": args.after}), args.force)
    before, after = load_report(args.before), load_report(args.after)
    diff = diff_reports(before, after)
    from ..files import to_json

    outputs.write("--json", to_json(diff.to_dict()), "report diff", args.quiet)
    human = sys.stderr if outputs.to_stdout else sys.stdout
    text = diff.to_text(changed_only=not args.all)
    human.write((text.splitlines()[0] if args.quiet else text) + "\n")
    human.flush()
    return diff.exit_code
