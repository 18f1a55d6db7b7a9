"""Progress of long work (xaijax.progress): a method's static ``progress`` option adds a
jax.debug.callback bar; off (the default) the compiled program is the one without it and
nothing is printed; the CLI is quiet with --quiet and when stderr is not a terminal."""

import jax
import jax.numpy as jnp
import pytest

import xaijax as xj
from xaijax import progress as P
from xaijax.methods import base

CASES = {  # method: small static options
    "rise": dict(num_masks=8, batch_size=4),
    "lime": dict(num_samples=8, batch_size=4, num_segments=4),
    "sise": dict(batch_size=8),
    "fgvis": dict(iterations=3),
    "dssr": dict(iterations=2),
    "extremal_perturbation": dict(max_iter=2),
    "meaningful_perturbation": dict(iterations=2, mask_size=8),
    "kernel_shap": dict(num_samples=8, batch_size=4, num_segments=4, segmentation="grid"),
    "shapley_sampling": dict(num_samples=2, batch_size=4, num_segments=4, segmentation="grid"),
    "occlusion": dict(window=16, strides=16, batch_size=2),
}
BARS = {"rise": 2, "occlusion": 2}  # 8 masks in chunks of 4; 4 windows in chunks of 2


@pytest.fixture(scope="module")
def setup():
    model = xj.models.get("small_cnn", num_classes=10)
    return model, jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))


def _hlo(name, model, x, **static):
    bm = base.bind(name, **CASES[name], **static)
    xs, t, _, tr = bm.prepare(model, x, jnp.array([1, 2]))
    return jax.jit(bm.body, static_argnums=(3,)).lower(model, xs, t, False, tr).as_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_progress_off_is_the_program_without_it(name, setup):
    model, x = setup
    default, off, on = (_hlo(name, model, x, **kw) for kw in ({}, {"progress": False},
                                                               {"progress": True}))
    assert off == default and "callback" not in off
    assert "callback" in on and on != off


def test_compare_and_evaluate_turn_on_every_long_methods_bar():
    # they pass progress=True to a method exactly when it has the option (compare.py,
    # evaluation.py: ``"progress" in base.info(name).options``)
    assert all("progress" in base.info(name).options for name in CASES)


@pytest.mark.parametrize("name", sorted(BARS))  # the others: their programs are checked above
def test_bar_only_when_asked(name, setup, capfd):
    model, x = setup
    for show in (False, True):
        ex = xj.explain(model, x, "top1", method=name, progress=show, **CASES[name])
        jax.block_until_ready(ex.heatmap)
        jax.effects_barrier()
        err = capfd.readouterr().err
        if show:
            steps = BARS[name]
            assert f"{steps}/{steps}" in err, err
        else:
            assert err == "", err


def test_progress_must_be_a_bool(setup):
    model, x = setup
    with pytest.raises(TypeError, match="progress must be True or False"):
        xj.explain(model, x, "top1", method="rise", progress="yes", **CASES["rise"])


def test_host_bar_and_default_rule(capfd, monkeypatch):
    step = P.bar(3, show=False)
    step("a"), step(None)
    assert capfd.readouterr().err == ""
    step = P.bar(2, show=True, desc="work")
    step("a"), step("b"), step(None)
    assert "2/2" in capfd.readouterr().err
    assert P.shown(True) and not P.shown(False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert not P.shown(None)


def test_cli_explain_quiet_when_not_interactive(tmp_path, capfd):
    from xaijax.cli import main

    out = tmp_path / "rise.png"
    rc = main(["explain", "chelsea", "--model", "small_cnn", "--random", "--method", "rise",
               "--opt", "num_masks=8", "--opt", "batch_size=4", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert "rise masks" not in capfd.readouterr().err  # stderr is captured: not a terminal


def test_data_sets_quiet_unless_asked(capfd):
    import importlib

    cutouts = importlib.import_module("xaijax.data.cutouts")
    flowers = importlib.import_module("xaijax.data.flowers").flowers  # the package re-exports it
    quiet = flowers(130, size=16, progress=False)
    assert capfd.readouterr().err == ""
    shown = flowers(130, size=16, progress=True)
    assert "flowers" in capfd.readouterr().err
    assert (quiet["images"] == shown["images"]).all()
    cutouts.composites(2, size=32, progress=False)
    assert capfd.readouterr().err == ""
    cutouts.composites(2, size=32, progress=True)
    assert "2/2" in capfd.readouterr().err


def test_compare_passes_its_progress_to_the_methods(setup, capfd):
    model, x = setup
    xj.viz.compare(model, x[:1], methods=[("rise", CASES["rise"])], progress=True)
    jax.effects_barrier()
    assert "rise masks" in capfd.readouterr().err
