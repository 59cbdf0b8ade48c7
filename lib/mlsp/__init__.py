"""MLSP: a reproduction kit for Hosu et al., CVPR 2019.

Notebooks tell the story; this package does the work. Keras runs on TensorFlow, set here
before Keras is first imported so that no user configuration silently picks another backend.
"""
import os

_backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Another backend only when asked for by name in MLSP_ALLOW_BACKEND too: benchmarks/gpu_extraction.py
# measures extraction speed with JAX or PyTorch on a GPU machine that has no TensorFlow. The kit's
# results are made on TensorFlow.
if _backend != "tensorflow" and os.environ.get("MLSP_ALLOW_BACKEND") != _backend:
    raise RuntimeError(
        f"KERAS_BACKEND={_backend!r}: the MLSP kit needs the TensorFlow backend "
        "(area resizing and the feature pipeline use TensorFlow ops). Unset KERAS_BACKEND."
    )
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import: no C++ start-up chatter

from mlsp import quiet as _quiet  # noqa: E402

_quiet.install_log_filter()  # Keras' per-model tracing is not retracing (mlsp.quiet)

__version__ = "0.1.0"
