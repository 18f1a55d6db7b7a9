"""Test-suite configuration.

* After each test module, compiled functions and cached model pairs are dropped, so a pytest
  (or pytest-xdist worker) process does not accumulate every model and executable of the suite
  (VGG16/ResNet/EfficientNet in float32 and float64 plus their XLA programs exceed 10 GB).
* Set ``XAIJAX_TEST_TIMES=FILE`` to append each test's wall time (``seconds<TAB>phase<TAB>
  outcome<TAB>nodeid``) to FILE as it finishes (pytest-xdist prints ``--durations`` only at the
  end).
"""

import functools
import gc
import os

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_module(request):
    yield
    import jax

    for obj in list(vars(request.module).values()):
        if isinstance(obj, functools._lru_cache_wrapper):
            obj.cache_clear()
    from tests import helpers

    helpers.torch_pair.cache_clear()
    from xaijax.methods import base

    base._JITTED.clear()
    jax.clear_caches()
    gc.collect()


def pytest_runtest_logreport(report):
    path = os.environ.get("XAIJAX_TEST_TIMES")
    if path and report.when in ("setup", "call"):
        with open(path, "a") as f:
            f.write(f"{report.duration:.1f}\t{report.when}\t{report.outcome}\t{report.nodeid}\n")
