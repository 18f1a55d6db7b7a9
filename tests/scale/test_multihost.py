"""Many hosts for real on one machine: two JAX processes on localhost (``jax.distributed``
with the gloo CPU collectives, 4 forced CPU devices each) give the single-process results,
for ``xj.explain`` on a global 8-device mesh and for a data-set run whose batches the two
processes share (grain shards them by JAX process)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import xaijax as xj
from xaijax import dataset

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]))
    import numpy as np
    from jax.experimental import multihost_utils
    import xaijax as xj

    assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 32, 32, 3)))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))      # the global mesh
    ex = xj.explain(m, x, [1, 2, 3, 4, 5], method="gradient", mesh=mesh)
    heat = multihost_utils.process_allgather(ex.heatmap, tiled=True)
    r = xj.run_dataset(m, sys.argv[3], method="gradient", out=sys.argv[4], batch_size=2,
                       mesh="auto", progress=False)
    np.save(sys.argv[4] + f".explain{jax.process_index()}.npy", np.asarray(heat))
    print("RESULT" + json.dumps({"computed": r.computed, "done": len(r.done)}))
""")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rs = np.random.RandomState(1)
    for i in range(7):
        Image.fromarray(rs.randint(0, 255, (36, 36, 3), np.uint8)).save(d / f"p{i}.png")
    (d / "p3.png").write_bytes(b"broken")
    return str(d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(images, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multihost") / "run")
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    port = str(_free_port())
    logs = [open(f"{out}.log{i}", "w+") for i in range(2)]  # files: a full pipe would block
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, images, out],
                              stdout=logs[i], stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(2)]
    results = []
    for p, log in zip(procs, logs):
        try:
            p.wait(timeout=300)
        finally:
            for q in procs:
                if q.poll() is None and p.returncode is None:
                    q.kill()
        log.seek(0)
        text = log.read()
        line = [ln for ln in text.splitlines() if ln.startswith("RESULT")]
        assert p.returncode == 0 and line, text[-3000:]
        results.append(json.loads(line[0][len("RESULT"):]))
    return out, results


def test_two_processes_explain_on_a_global_mesh_like_one_device(workers):
    import jax

    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 32, 32, 3)))
    ref = np.asarray(xj.explain(m, x, [1, 2, 3, 4, 5], method="gradient").heatmap)
    for i in range(2):  # every process holds the whole (gathered) result
        got = np.load(f"{workers[0]}.explain{i}.npy")
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)


def test_two_process_dataset_run_equals_one_process(images, workers, tmp_path):
    out, results = workers
    # batch b (rows 2b, 2b+1) belongs to process b mod 2; each computed only its own
    assert sorted(results[0]["computed"]) == [0, 1, 4, 5]
    assert sorted(results[1]["computed"]) == [2, 3, 6]
    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    one = xj.run_dataset(m, images, method="gradient", out=str(tmp_path / "one"),
                         batch_size=2, progress=False)
    np.testing.assert_allclose(dataset.read_heatmaps(out), one.heatmaps(), rtol=1e-6,
                               atol=1e-12)
    man, ref = dataset.read_manifest(out), dataset.read_manifest(one.out)
    assert man["done"] == ref["done"] and man["failed"] == ref["failed"]
    assert list(ref["failed"]) == [os.path.join(images, "p3.png")]
    assert set(man["state"]) == {"0", "1"} and man["process_count"] == 2
    assert not [f for f in os.listdir(out) if f.startswith("manifest.process")]
    # resumed by one process (another split of the batches): nothing left to compute
    again = xj.run_dataset(m, images, method="gradient", out=out, batch_size=2, progress=False)
    assert again.computed == [] and again.done == ref["done"]
