"""Test-suite configuration.

* After each test module, compiled functions and the model pairs outside
  ``tests.helpers.SHARED_PAIRS`` are dropped, so a pytest (or pytest-xdist worker) process does
  not accumulate every model and executable of the suite (all zoo pairs in float32 and float64
  plus their XLA programs exceed 10 GB).
* Set ``XAIJAX_TEST_TIMES=FILE`` to append each test's wall time to FILE as it finishes
  (pytest-xdist prints ``--durations`` only at the end): ``seconds<TAB>phase<TAB>outcome<TAB>
  nodeid<TAB>trace<TAB>lower<TAB>compile``, the last three the seconds JAX spent tracing,
  lowering to MLIR and compiling with XLA in that phase.
* Set ``XAIJAX_TEST_COMPILES=FILE`` to append one line per XLA compilation (``seconds<TAB>
  jitted function<TAB>test``; persistent-cache events with 0 seconds), to find which programs
  a slow test compiles: ``sort -rn FILE | head``.
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

    _one_thread_per_worker(config)
    if "XAIJAX_TEST_XLA_CACHE" not in os.environ:
        os.environ["XAIJAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="xaijax-test-xla-cache-")
        config._xaijax_cache_to_remove = os.environ["XAIJAX_TEST_XLA_CACHE"]
    jax.config.update("jax_compilation_cache_dir", os.environ["XAIJAX_TEST_XLA_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _one_thread_per_worker(config):
    """Under pytest-xdist with as many workers as cores, torch's intra-op threads (one per core
    in each worker) oversubscribe the CPU: two workers each running a float64 VGG16 backward
    took 1.0-1.05 s per call with one thread each and 1.2-1.6 s with two (2 cores). The workers
    inherit ``OMP_NUM_THREADS`` from this process; a value the user set is kept."""
    workers = getattr(config.option, "numprocesses", None)
    cores = os.cpu_count() or 1
    if isinstance(workers, int) and workers > 0 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run first (a stable sort: the order within each group is kept).
    pytest-xdist hands tests to whichever worker is free, so the long ones going first leaves
    only short tests for the end, instead of one worker finishing a 60 s test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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

    base._BOUND.clear()
    base._num_logits.cache_clear()
    jax.clear_caches()
    gc.collect()


_JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": 0,
               "/jax/core/compile/jaxpr_to_mlir_module_duration": 1,
               "/jax/core/compile/backend_compile_duration": 2}
_jax_seconds = [0.0, 0.0, 0.0]


def _log_compile(seconds, what):
    with open(os.environ["XAIJAX_TEST_COMPILES"], "a") as f:
        f.write(f"{seconds:.2f}\t{what}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}\n")


class CompileCounter:
    """What JAX traced and compiled while the ``compiles`` fixture was active."""

    def __init__(self):
        self.traced: list = []    # names of the functions traced (every jit cache miss)
        self.compiled: list = []  # names compiled by XLA or read from the persistent cache

    @property
    def count(self) -> int:
        return len(self.traced) + len(self.compiled)

    def reset(self):
        self.traced.clear()
        self.compiled.clear()

    def __repr__(self):
        return f"traced {self.traced}, compiled {self.compiled}"


_counters: list = []


@pytest.fixture
def compiles():
    """A :class:`CompileCounter` fed by ``jax.monitoring`` for the duration of the test:
    ``f(...); compiles.reset(); f(...); assert compiles.count == 0, compiles`` proves that a
    repeated call neither retraced nor recompiled (a hit of the on-disk cache counts too)."""
    c = CompileCounter()
    _counters.append(c)
    yield c
    _counters.remove(c)


def _on_jax_event(event, duration, **kwargs):
    i = _JAX_EVENTS.get(event)
    if i is not None:
        _jax_seconds[i] += duration
        for c in _counters:
            if i == 0:
                c.traced.append(kwargs.get("fun_name"))
            elif i == 2:
                c.compiled.append(kwargs.get("fun_name"))
    if i == 2 and os.environ.get("XAIJAX_TEST_COMPILES"):
        _log_compile(duration, kwargs.get("fun_name"))


def _on_jax_cache_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        for c in _counters:
            c.compiled.append(event)
    if event.startswith("/jax/compilation_cache/") and os.environ.get("XAIJAX_TEST_COMPILES"):
        _log_compile(0.0, event)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(_on_jax_event)
    monitoring.register_event_listener(_on_jax_cache_event)


def pytest_runtest_logreport(report):
    path = os.environ.get("XAIJAX_TEST_TIMES")
    # under pytest-xdist the controller sees each report again (with ``node`` set): skip those
    if path and report.when in ("setup", "call") and getattr(report, "node", None) is None:
        jax_s = "\t".join(f"{v:.1f}" for v in _jax_seconds)
        _jax_seconds[:] = [0.0, 0.0, 0.0]
        with open(path, "a") as f:
            f.write(f"{report.duration:.1f}\t{report.when}\t{report.outcome}\t{report.nodeid}"
                    f"\t{jax_s}\n")


# ------------------------------------------------------------------------------------------------
# under CI a parity test never skips for a missing peer library or model package

_MISSING = ("could not import", "No module named", "not available", "not installed")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _fail_missing_skip(rep) -> None:
    """Turn a skip for something missing (``pytest.importorskip``, an unavailable pretrained
    package) into a failure when ``CI=true``: CI installs every peer, so such a skip means a set-up
    step is broken and the parity test would silently not run."""
    if not (_ci() and rep.skipped and isinstance(rep.longrepr, tuple)):
        return
    reason = str(rep.longrepr[2])
    if any(m in reason for m in _MISSING):
        rep.outcome = "failed"
        rep.longrepr = (f"CI=true: this test may not skip for a missing dependency ({reason}); "
                        f"install it (scripts/test.sh installs the test and torch extras)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_skip(outcome.get_result())
