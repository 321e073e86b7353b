"""JUnit XML for CI systems: one ``<testcase>`` per theorem of a bound-regression check.

A failed comparison is a ``<failure>`` (message: the one-line change; body: the intervals and
reason); a theorem NOT_APPLICABLE both in the baseline and now is ``<skipped>``; everything
else passes, with its comparison in ``<system-out>``. The layout follows the schema most CI
systems read (Jenkins / GitLab / GitHub test reporters): ``testsuites > testsuite >
testcase``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from boundcheck.core.verdict import Verdict
from boundcheck.outputs.regression import CheckReport
from boundcheck.verification.results import write_text_atomic


def junit_xml(report: CheckReport, suite: str = "boundcheck") -> str:
    """The check as a JUnit XML document."""
    skipped = {c.theorem_id for c in report.checks if c.old is not None and c.new is not None
               and c.old.verdict == c.new.verdict == Verdict.NOT_APPLICABLE}
    root = ET.Element("testsuites", name=suite, tests=str(len(report.checks)),
                      failures=str(len(report.failures)), errors="0")
    ts = ET.SubElement(root, "testsuite", name=f"{suite}.{report.subject or 'subject'}",
                       tests=str(len(report.checks)), failures=str(len(report.failures)),
                       errors="0", skipped=str(len(skipped)), time="0")
    props = ET.SubElement(ts, "properties")
    ET.SubElement(props, "property", name="tolerance", value=f"{report.tolerance:g}")
    if report.baseline:
        ET.SubElement(props, "property", name="baseline", value=report.baseline)
    for c in report.checks:
        case = ET.SubElement(ts, "testcase", name=c.theorem_id,
                             classname=f"{suite}.{report.subject or 'subject'}", time="0")
        body = c.message + (f"\n{c.details}" if c.details else "")
        if c.failed:
            failure = ET.SubElement(case, "failure", message=c.message, type="BoundRegression")
            failure.text = body
        elif c.theorem_id in skipped:
            ET.SubElement(case, "skipped", message=c.new.reason or "not applicable")
        else:
            ET.SubElement(case, "system-out").text = body
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


def write_junit(report: CheckReport, path: str | Path, suite: str = "boundcheck") -> Path:
    """Write the JUnit XML atomically (a CI reader never sees half a file)."""
    return write_text_atomic(path, junit_xml(report, suite))
