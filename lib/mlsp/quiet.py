"""Keep executed notebooks and `mlsp run`'s log free of messages that tell a reader nothing.

What is removed, and why it says nothing here:
- TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()", cpu_feature_guard's
  "This TensorFlow binary is optimized ...", the oneDNN notice): INFO-level, silenced by
  TF_CPP_MIN_LOG_LEVEL=2, which must be in the environment before TensorFlow is first imported.
  `mlsp/__init__` sets it (a notebook imports mlsp before Keras), and so does the runner for the
  kernels it starts. Errors from C++ stay visible; its WARNING lines are hidden too at level 2 (set
  TF_CPP_MIN_LOG_LEVEL=0 before starting to see everything).
- ipykernel's "Kernel is running over TCP without encryption": not hidden but made untrue. The
  runner asks jupyter_client to provision CurveZMQ keys for its kernels (`kernel_config`) where
  pyzmq supports it and the kernelspec declares it (ipykernel >= 7); elsewhere the line remains.
- TensorFlow's "N out of the last M calls to <function TensorFlowTrainer...> triggered tf.function
  retracing": TensorFlow counts traces per Python *code object*, so every freshly built Keras model
  (each row of a table is one) adds one trace to the same counter, and a few small models in a row
  trip it though none of them retraced. `KerasRetracingFilter` drops the warning for Keras' own
  step functions only; retracing within one model is prevented where it happened (one batch shape
  per model in mlsp.train.predict) and tested by counting traces (tests/test_quiet.py). The warning
  still shows for any other tf.function, e.g. mlsp.features'.
- Progress bars redrawn many times a second: in a terminal they overwrite themselves, but a notebook
  executed by papermill keeps each redraw as a separate stderr output (hundreds in notebook 01).
  `progress_bar` redraws every NOTEBOOK_BAR_SECONDS where stderr is not a terminal.
"""
from __future__ import annotations

import logging
import sys

TF_LOG_LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: 1 hides INFO, 2 also WARNING from C++ (not Python's warnings)
KERAS_STEP_FUNCTIONS = ("TensorFlowTrainer.make_predict_function.", "TensorFlowTrainer._make_function.")


class KerasRetracingFilter(logging.Filter):
    """Drops TensorFlow's frequent-retracing warning when it names a Keras trainer step function."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and any(name in message for name in KERAS_STEP_FUNCTIONS))


def install_log_filter() -> None:
    """Attach KerasRetracingFilter to the "tensorflow" logger (the one TensorFlow's Python side
    logs to); idempotent, and needs no TensorFlow import."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(existing, KerasRetracingFilter) for existing in logger.filters):
        logger.addFilter(KerasRetracingFilter())


def kernel_config():
    """traitlets Config for the kernels papermill starts: CurveZMQ transport encryption where
    jupyter_client can provision it (8.10 can) and pyzmq has it ("auto" also needs the kernelspec to
    declare it); an empty Config otherwise (an unknown option would only add a warning)."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    config = Config()
    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return config


NOTEBOOK_BAR_SECONDS = 30.0


def progress_bar(iterable=None, **options):
    """tqdm's bar, redrawn at most every NOTEBOOK_BAR_SECONDS (and at the end) when stderr is not a
    terminal: an executed notebook or a log keeps a line per half minute instead of one per image."""
    from tqdm import tqdm

    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        options.setdefault("mininterval", NOTEBOOK_BAR_SECONDS)
        options.setdefault("maxinterval", NOTEBOOK_BAR_SECONDS * 2)
    return tqdm(iterable, **options)
