"""Test-suite configuration.

* After each test module, compiled functions and the model pairs outside
  ``tests.helpers.SHARED_PAIRS`` are dropped, so a pytest (or pytest-xdist worker) process does
  not accumulate every model and executable of the suite (all zoo pairs in float32 and float64
  plus their XLA programs exceed 10 GB).
* Set ``XAIJAX_TEST_TIMES=FILE`` to append each test's wall time to FILE as it finishes
  (pytest-xdist prints ``--durations`` only at the end): ``seconds<TAB>phase<TAB>outcome<TAB>
  nodeid<TAB>trace<TAB>lower<TAB>compile``, the last three the seconds JAX spent tracing,
  lowering to MLIR and compiling with XLA in that phase.
"""

import functools
import gc
import os
import shutil
import tempfile

import pytest


def pytest_configure(config):
    """One on-disk XLA compilation cache per test run, shared by the pytest-xdist workers, so a
    program that several tests (or modules, after the per-module ``jax.clear_caches()``) compile
    identically is compiled once. The main process makes it empty, the workers inherit it
    through the environment, and it is deleted at the end of the run. ``XAIJAX_TEST_XLA_CACHE``
    names a directory to use (and keep) instead."""
    import jax

    if "XAIJAX_TEST_XLA_CACHE" not in os.environ:
        os.environ["XAIJAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="xaijax-test-xla-cache-")
        config._xaijax_cache_to_remove = os.environ["XAIJAX_TEST_XLA_CACHE"]
    jax.config.update("jax_compilation_cache_dir", os.environ["XAIJAX_TEST_XLA_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    path = getattr(config, "_xaijax_cache_to_remove", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_module(request):
    yield
    import jax

    for obj in list(vars(request.module).values()):
        if isinstance(obj, functools._lru_cache_wrapper):
            obj.cache_clear()
    from tests import helpers

    helpers.release_pairs()
    from xaijax.methods import base

    base._JITTED.clear()
    jax.clear_caches()
    gc.collect()


_JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": 0,
               "/jax/core/compile/jaxpr_to_mlir_module_duration": 1,
               "/jax/core/compile/backend_compile_duration": 2}
_jax_seconds = [0.0, 0.0, 0.0]


def _on_jax_event(event, duration, **kwargs):
    i = _JAX_EVENTS.get(event)
    if i is not None:
        _jax_seconds[i] += duration


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    if os.environ.get("XAIJAX_TEST_TIMES"):
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(_on_jax_event)


def pytest_runtest_logreport(report):
    path = os.environ.get("XAIJAX_TEST_TIMES")
    # under pytest-xdist the controller sees each report again (with ``node`` set): skip those
    if path and report.when in ("setup", "call") and getattr(report, "node", None) is None:
        jax_s = "\t".join(f"{v:.1f}" for v in _jax_seconds)
        _jax_seconds[:] = [0.0, 0.0, 0.0]
        with open(path, "a") as f:
            f.write(f"{report.duration:.1f}\t{report.when}\t{report.outcome}\t{report.nodeid}"
                    f"\t{jax_s}\n")
