"""Under ``CI=true`` a test that skips for a missing peer library fails instead (conftest)."""

import types

from tests import conftest


def _report(reason):
    return types.SimpleNamespace(skipped=True, outcome="skipped",
                                 longrepr=("tests/x.py", 3, f"Skipped: {reason}"))


def test_missing_library_skip_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    rep = _report("could not import 'captum': No module named 'captum'")
    conftest._fail_missing_skip(rep)
    assert rep.outcome == "failed" and "CI=true" in rep.longrepr
    rep = _report("pretrained EfficientNet-Lite0 not available: no package")
    conftest._fail_missing_skip(rep)
    assert rep.outcome == "failed"


def test_other_skips_and_local_runs_are_kept(monkeypatch):
    monkeypatch.setenv("CI", "true")
    rep = _report("Captum's DeepLift refuses a module used twice")
    conftest._fail_missing_skip(rep)
    assert rep.outcome == "skipped"
    monkeypatch.delenv("CI")
    rep = _report("could not import 'captum': No module named 'captum'")
    conftest._fail_missing_skip(rep)
    assert rep.outcome == "skipped"
