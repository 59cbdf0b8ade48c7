"""The `distribute` parameter: "mirrored" trains the same rows as "none", each of the Protocol's
global batches split across the replicas. The replicas here are two logical CPU devices (made in a
fresh Python by tests/distribute_rows.py); no run on several GPUs is part of the tests."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from mlsp import distribute, experiments, heads, train
from mlsp.parameter_rules import RULES, Context

# Training losses, validation losses of the heads and the heads' predictions: the same numbers but
# for the order of float sums (each replica sums its half of the batch, then the halves are added;
# synchronized batch norm's variance is E[x^2] - E[x]^2 instead of a two-pass mean of squared
# deviations). Measured: <= 2.1e-7 relative.
RTOL = 1e-5
# Fine-tuning's validation losses and test predictions run the backbone's BatchNorm on its moving
# statistics, accumulated over every step from the synchronized variance above, which cancels more
# digits on conv activations. Measured: 4.4e-5 relative. What the tolerances must catch is far
# outside both: per-replica batch statistics put the feature row's curves 14% apart, batches in
# another order (Keras' extra shuffle under a strategy) 1.5%.
RTOL_FINETUNED_INFERENCE = 5e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("distribute")
    out = work / "runs.json"
    done = subprocess.run([sys.executable, str(REPO / "tests" / "distribute_rows.py"), str(work), str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_mirrored_uses_both_logical_devices(runs):
    assert runs["replicas"] == 2


@pytest.mark.slow
def test_each_global_batch_is_split_between_the_replicas(runs):
    # one epoch of 40 rows in batches of 16: 16, 16 and a short 8, as each replica's step receives them
    assert runs["none"]["replica_batches"] == [8, 16, 16]
    assert runs["mirrored"]["replica_batches"] == [4, 4, 8, 8, 8, 8]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["none", "mirrored"])
def test_steps_per_epoch_are_those_of_the_protocols_global_batch(runs, name):
    (feature_images, finetune_images), (feature_batch, finetune_batch), (feature_epochs, finetune_epochs) = runs["train_images"], runs["batch"], runs["epochs"]
    assert runs[name]["feature_steps"] == [math.ceil(feature_images / feature_batch)] * feature_epochs
    assert runs[name]["finetune_steps"] == [math.ceil(finetune_images / finetune_batch)] * finetune_epochs


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, rtol",
    [
        ("feature_loss", RTOL),
        ("feature_val_loss", RTOL),
        ("feature_predicted", RTOL),
        ("finetune_loss", RTOL),
        ("finetune_val_loss", RTOL_FINETUNED_INFERENCE),
        ("finetune_predicted", RTOL_FINETUNED_INFERENCE),
    ],
)
def test_mirrored_training_agrees_with_one_device(runs, key, rtol):
    alone, mirrored = np.array(runs["none"][key]), np.array(runs["mirrored"][key])
    assert len(alone) == len(mirrored) > 1
    np.testing.assert_allclose(mirrored, alone, rtol=rtol)


@pytest.mark.slow
def test_batch_norm_takes_global_statistics_only_with_several_replicas(runs):
    assert runs["mirrored"]["feature_synchronized"] == [True, True, True]  # saved with the head
    assert runs["none"]["feature_synchronized"] == [False, False, False]


def test_none_is_the_strategy_in_effect_and_changes_nothing():
    assert train.Protocol().distribute == "none"
    assert distribute.strategy("none") is tf.distribute.get_strategy()
    assert distribute.replicas("none") == 1
    assert distribute.same_batch_order("none") == []
    model = heads.build("single_3fc", 8, [0, 8])
    assert distribute.global_batch_norm(model, "none") == 0
    assert not any(getattr(layer, "synchronized", False) for layer in model.layers)


def test_the_notebooks_parameters_carry_distribute_into_the_protocol():
    assert experiments.protocol_from({"distribute": "mirrored", "batch_size": 128, "backbone": "x"}).distribute == "mirrored"


def test_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match=r"^distribute='several': should be one of none, mirrored$"):
        distribute.strategy("several")


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="GPUs are visible here")
def test_mirrored_without_a_gpu_is_an_error_naming_the_parameter():
    if len(tf.config.list_logical_devices("CPU")) > 1:
        pytest.skip("the CPU is split into logical devices in this process")
    with pytest.raises(ValueError, match=r"^distribute='mirrored' needs at least one GPU.*set distribute: none"):
        distribute.strategy("mirrored")


def test_the_parameter_rule_accepts_the_two_modes_only():
    context, rule = Context("demo"), RULES["distribute"]
    assert context.names("distribution mode") == distribute.STRATEGIES == ("none", "mirrored")
    assert rule.problem("none", context) is None and rule.problem("mirrored", context) is None
    assert rule.problem("multi_worker", context) == ""
    assert rule.allowed(context) == "one of the distribution modes: none, mirrored"


@pytest.fixture
def demo_params(tmp_path):
    """A copy of the demo profile's parameter files, to change without touching the shipped ones."""
    shutil.copytree(REPO / "params" / "demo", tmp_path / "params" / "demo")
    return tmp_path / "params"


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="GPUs are visible here")
def test_a_dry_run_refuses_mirrored_without_a_gpu_for_the_notebooks_it_would_run(demo_params, tmp_path):
    from mlsp.parameters import ParameterError
    from mlsp.runner import run_profile

    def dry_run(**kwargs):
        return run_profile("demo", dry_run=True, params_dir=demo_params, results_dir=tmp_path / "results", log=lambda message: None, **kwargs)

    expected = r"^params/demo/ \(or --set\): key 'distribute' is 'mirrored' for {}, but distribute='mirrored' needs at least one GPU.*set distribute: none"
    with pytest.raises(ParameterError, match=expected.format(r"02_table2_rescaled\.ipynb")):
        dry_run(only=["02"], overrides={"distribute": "mirrored"})
    (demo_params / "demo" / "03_table3_full_resolution.yaml").open("a").write("\ndistribute: mirrored\n")
    with pytest.raises(ParameterError, match=expected.format(r"03_table3_full_resolution\.ipynb")):
        dry_run()
    # data can still be prepared on this machine: notebooks 00-01 do not train
    assert dry_run(only=["00", "01"]) == []


def test_unavailable_neither_builds_a_strategy_nor_freezes_the_devices():
    # in a fresh Python without GPUs: "mirrored" is refused until the CPU is split, and asking does
    # not start TensorFlow's runtime (after which the split could no longer be made)
    script = (
        "import tensorflow as tf\n"
        "from mlsp import distribute\n"
        "assert distribute.unavailable('none') is None\n"
        "assert distribute.unavailable('mirrored') == distribute.NO_GPU\n"
        "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "assert distribute.unavailable('mirrored') is None\n"
        "assert distribute.replicas('mirrored') == 2\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
