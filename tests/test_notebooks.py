"""Every notebook in notebooks/ executes top to bottom, at its small size.

The notebooks read ``XAIJAX_NOTEBOOK_SMALL=1`` (small CNN, tiny inputs, few iterations); unset,
they use the pretrained model at full size. All of them run in one kernel, its namespace reset
(``%reset -f``) before each notebook: starting a kernel and importing JAX and xaijax costs
4-5 s, paid once instead of once per notebook.
"""

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    env = dict(os.environ, XAIJAX_NOTEBOOK_SMALL="1", PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    if os.environ.get("XAIJAX_TEST_XLA_CACHE"):  # the suite's compilation cache (conftest)
        env.update(JAX_COMPILATION_CACHE_DIR=os.environ["XAIJAX_TEST_XLA_CACHE"],
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(tmp_path_factory.mktemp("notebooks")))
    yield km
    km.shutdown_kernel(now=True)


@pytest.mark.slow  # every notebook compiles its own programs: 5-20 s each
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, kernel):
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f\nimport matplotlib.pyplot as _p\n"
                                                 "_p.close('all'); del _p"))
    client = nbclient.NotebookClient(nb, km=kernel, timeout=300, kernel_name="python3")
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
