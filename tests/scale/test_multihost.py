"""Many hosts for real on one machine: two JAX processes on localhost (``jax.distributed``
with the gloo CPU collectives, 4 forced CPU devices each) give the single-process results,
for ``xj.explain`` on a global 8-device mesh and for a data-set run whose batches the two
processes share (grain shards them by JAX process); a data-set run killed under one process
count and resumed under the other gives the uninterrupted single-process result."""

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


# a killed 1-process run (its folder made by the test) resumed by two processes, then a 2-process
# run killed: process 0 right after committing its 7th batch, process 1 after its 2nd, with
# their manifests written after every batch (so that their iterator positions are on disk)
RESUME_WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]))
    import xaijax as xj
    from xaijax import dataset

    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    r = xj.run_dataset(m, sys.argv[3], method="gradient", out=sys.argv[4], batch_size=1,
                       progress=False)
    print("RESULT" + json.dumps({"computed": r.computed}), flush=True)
    dataset.MANIFEST_EVERY_S = 0.0
    os.environ[dataset.EXIT_AFTER_ENV] = "7" if jax.process_index() == 0 else "2"
    xj.run_dataset(m, sys.argv[3], method="gradient", out=sys.argv[5], batch_size=1,
                   progress=False)
""")
M, BROKEN = 16, 1  # images of the resume test (batch size 1: batch b is row b); p01 broken


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


def _launch(script, args, log):
    """Run ``script`` as JAX processes 0 and 1 (4 CPU devices each) with ``args``; returns
    each one's (return code, the JSON after RESULT or None, its output)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    env.pop(dataset.EXIT_AFTER_ENV, None)
    port = str(_free_port())
    logs = [open(f"{log}{i}", "w+") for i in range(2)]  # files: a full pipe would block
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), port, *args],
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
        results.append((p.returncode, json.loads(line[0][len("RESULT"):]) if line else None,
                        text))
    return results


@pytest.fixture(scope="module")
def workers(images, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multihost") / "run")
    results = []
    for rc, result, text in _launch(WORKER, [images, out], f"{out}.log"):
        assert rc == 0 and result, text[-3000:]
        results.append(result)
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


class _Killed(Exception):
    pass


def _exit(code):
    raise _Killed(code)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """``(photos, folder killed under 1 process and resumed by 2, the 2 processes' results of
    that resume, folder killed under 2 processes)``."""
    d = tmp_path_factory.mktemp("photos16")
    rs = np.random.RandomState(2)
    for i in range(M):
        Image.fromarray(rs.randint(0, 255, (36, 36, 3), np.uint8)).save(d / f"p{i:02d}.png")
    (d / f"p{BROKEN:02d}.png").write_bytes(b"broken")
    base = tmp_path_factory.mktemp("resume")
    one_two, two_one = str(base / "one_two"), str(base / "two_one")
    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    with pytest.MonkeyPatch.context() as mp:  # the kill, in this process: os._exit raises
        mp.setattr(dataset, "MANIFEST_EVERY_S", 0.0)
        mp.setenv(dataset.EXIT_AFTER_ENV, "5")
        mp.setattr(os, "_exit", _exit)
        with pytest.raises(_Killed):
            xj.run_dataset(m, str(d), method="gradient", out=one_two, batch_size=1,
                           progress=False)
    assert dataset.committed_batches(one_two) == {0, 1, 2, 3, 4}
    # its manifest holds the iterator position after 4 batches: in the 2-process split that
    # position would skip process 0's batches 0, 2, 4 and 6 (6 not committed)
    assert "0" in dataset.read_manifest(one_two)["state"]
    runs = _launch(RESUME_WORKER, [str(d), one_two, two_one], str(base / "log"))
    for rc, result, text in runs:
        assert rc == 17 and result, text[-3000:]  # the 2nd run's kill hook ended it
    return str(d), one_two, [result for _, result, _ in runs], two_one


@pytest.fixture(scope="module")
def uninterrupted(resumed, tmp_path_factory):
    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    r = xj.run_dataset(m, resumed[0], method="gradient",
                       out=str(tmp_path_factory.mktemp("resume") / "ref"), batch_size=1,
                       progress=False)
    assert sorted(r.computed) == list(range(M))
    return r


def _same_as(out, ref, nproc):
    np.testing.assert_allclose(dataset.read_heatmaps(out), ref.heatmaps(), rtol=1e-6,
                               atol=1e-12)
    np.testing.assert_array_equal(dataset.read_targets(out), ref.targets())
    assert ref.targets()[BROKEN] == -1
    man, ref_man = dataset.read_manifest(out), dataset.read_manifest(ref.out)
    assert man["done"] == ref_man["done"] and man["failed"] == ref_man["failed"]
    assert list(man["failed"]) == [ref.images[BROKEN]]
    assert man["process_count"] == nproc
    assert not [f for f in os.listdir(out) if f.startswith(("manifest.process", "."))]


def test_one_process_run_killed_and_resumed_by_two(resumed, uninterrupted):
    _, out, results, _ = resumed
    # the batches the killed run did not commit, each computed once, by its new owner
    # (b mod 2); none skipped because of the old iterator position
    assert results[0]["computed"] == [6, 8, 10, 12, 14]
    assert results[1]["computed"] == [5, 7, 9, 11, 13, 15]
    _same_as(out, uninterrupted, 2)


def test_two_process_run_killed_and_resumed_by_one(resumed, uninterrupted):
    photos, _, _, out = resumed
    # process 0 committed its batches 0..12, process 1 its 1 and 3; both recorded their
    # iterator positions (process 1 in its own manifest.process-1.json)
    assert dataset.committed_batches(out) == {0, 1, 2, 3, 4, 6, 8, 10, 12}
    # process 0's position (after 6 batches) would skip batches 0-5 in the 1-process split
    killed = dataset.read_manifest(out)
    assert killed["process_count"] == 2 and "0" in killed["state"]
    assert os.path.exists(os.path.join(out, "manifest.process-1.json"))
    m = xj.models.get("small_cnn", pretrained=False, seed=0)
    r = xj.run_dataset(m, photos, method="gradient", out=out, batch_size=1, progress=False)
    assert r.computed == [5, 7, 9, 11, 13, 14, 15]
    _same_as(out, uninterrupted, 1)
