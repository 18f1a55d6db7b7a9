"""Test-suite configuration.

Set ``XAIJAX_TEST_TIMES=FILE`` to append each test's wall time (``seconds<TAB>nodeid``) to FILE
as it finishes (handy with pytest-xdist, whose ``--durations`` report only comes at the end).
"""

import os


def pytest_runtest_logreport(report):
    path = os.environ.get("XAIJAX_TEST_TIMES")
    if path and report.when in ("setup", "call"):
        with open(path, "a") as f:
            f.write(f"{report.duration:.1f}\t{report.when}\t{report.outcome}\t{report.nodeid}\n")
