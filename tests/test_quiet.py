"""Readable outputs: no TensorFlow start-up or retracing noise in executed notebooks or the run's log,
and no retracing where it was real (one model predicting sets of different sizes)."""
import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO, write_notebook
from mlsp import quiet, train
from mlsp.runner import run_profile

NOISE = (
    "absl::InitializeLog",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
    "oneDNN custom operations",
    "triggered tf.function retracing",
    "UserWarning",
    "Kernel is running over TCP without encryption",
)


def _head(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])


def test_one_model_traces_its_predict_step_once_for_sets_of_any_size():
    source = np.random.default_rng(0).random((40, 3, 2, 2, 3)).astype(np.float32)  # [images, views, ...]
    model = _head()
    for rows in (np.arange(20), np.arange(3), np.arange(40), np.arange(1)):  # 60, 9, 120, 3 pairs
        predicted = train.predict(model, source, rows, batch_size=32)
        expected = np.asarray(model(source[rows].reshape(-1, 2, 2, 3))).reshape(len(rows), 3).mean(axis=1)
        np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)  # the repeats are dropped, the order kept
    assert model.predict_function.experimental_get_tracing_count() == 1


def _record(message):
    return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)


def test_the_filter_drops_only_keras_step_function_retracing():
    keep = quiet.KerasRetracingFilter().filter
    keras_step = "5 out of the last 5 calls to <function TensorFlowTrainer.make_predict_function.<locals>.one_step_on_data_distributed at 0x7f> triggered tf.function retracing. Tracing is expensive"
    keras_train = "5 out of the last 13 calls to <function TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator at 0x7f> triggered tf.function retracing."
    ours = "5 out of the last 5 calls to <function mlsp_model.<locals>.extract at 0x7f> triggered tf.function retracing."
    assert not keep(_record(keras_step)) and not keep(_record(keras_train))
    assert keep(_record(ours))
    assert keep(_record("TensorFlowTrainer._make_function: some other warning"))


def test_importing_mlsp_first_keeps_tensorflow_start_up_lines_out():
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}  # as in Jupyter by hand
    done = subprocess.run([sys.executable, "-c", "import mlsp, tensorflow"], env=environment, cwd=REPO, capture_output=True, text=True, check=True)
    assert not [line for line in done.stderr.splitlines() if any(noise in line for noise in NOISE)], done.stderr


def test_a_notebook_building_models_in_a_loop_runs_without_noise(tmp_path, monkeypatch, capfd):
    """Through the kit's runner, as `mlsp run` does: TensorFlow imported first, then six small
    models each trained for an epoch and predicting two sets of different sizes (what a table's rows
    do). Before: retracing warnings in the notebook, ipykernel's plain-TCP warning in the log."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the runner must set it itself
    write_notebook(
        tmp_path / "notebooks" / "00_models.ipynb",
        'profile = "x"',
        "import tensorflow as tf\nimport keras\nimport numpy as np\nfrom mlsp import train",
        "source = np.random.default_rng(0).random((40, 2, 2, 2, 3)).astype('float32')\n"
        "mos = np.linspace(3, 7, 40)\n"
        "protocol = train.Protocol(max_epochs=1, batch_size=8)\n"
        "for seed in range(6):\n"
        "    keras.utils.set_random_seed(seed)\n"
        "    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(4), keras.layers.Dense(1, name='mos')])\n"
        "    train.fit(model, source, np.arange(30), mos[:30], np.arange(30, 34), mos[30:34], protocol, seed)\n"
        "    train.predict(model, source, np.arange(34, 40)), train.predict(model, source, np.arange(30, 34))\n"
        "print('six models')",
    )
    (tmp_path / "params" / "tiny").mkdir(parents=True)
    (tmp_path / "params" / "tiny" / "common.yaml").write_text("profile: tiny\n")
    run_profile("tiny", notebooks_dir=tmp_path / "notebooks", params_dir=tmp_path / "params", results_dir=tmp_path / "results", log=lambda message: None)
    executed = json.loads((tmp_path / "results" / "tiny" / "notebooks" / "00_models.ipynb").read_text())
    outputs = [output for cell in executed["cells"] for output in cell.get("outputs", [])]
    text = "\n".join("".join(output.get("text", "")) + json.dumps(output.get("data", {})) for output in outputs)
    assert "six models" in text  # the notebook ran to the end
    log = capfd.readouterr()
    found = [noise for noise in NOISE if noise in text or noise in log.err or noise in log.out]
    assert not found, f"noise in the executed notebook or the run's log: {found}\n{text}\n{log.err}"


def test_progress_bars_redraw_rarely_where_stderr_is_not_a_terminal(monkeypatch):
    """In an executed notebook every redraw is kept as an output: 200 updates in under a second
    must leave at most the first and the last draw, while a terminal keeps tqdm's own rate."""
    import io

    from mlsp import quiet

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, most in ((io.StringIO(), 2), (Terminal(), None)):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = quiet.progress_bar(total=200, file=stream)
        for _ in range(200):
            bar.update(1)
        bar.close()
        draws = stream.getvalue().count("\r")
        if most is not None:
            assert bar.mininterval == quiet.NOTEBOOK_BAR_SECONDS and draws <= most + 1
        else:
            assert bar.mininterval < 1
