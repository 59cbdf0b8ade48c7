"""Training speed: feeding a head from the HDF5 store vs from memory, measured in one run.

    python benchmarks/training.py [--images 2000] [--epochs 3]

Both runs train the same Single-3FC head on the same features with the same batches; the first epoch
(tracing) is left out of the rate. Target: HDF5 at least 0.8x the in-memory rate. It also times a
Pool-3FC head on wide features with and without XLA (jit_compile).

    python benchmarks/training.py --trace [--trace-backbone inception_v3]

times only the first training step (tracing the graph, then one step) of Multi-3FC on a backbone's
blocks, in CPU seconds, with Keras' Adam and with the kit's FusedAdam, side by side.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def rate(head_builder, source, n, epochs, jit):
    from mlsp import train

    keras.utils.set_random_seed(0)
    model = head_builder()
    train.compile_head(model, train.Protocol(jit_compile=jit))
    batches = train.FeatureBatches(source, np.arange(n), np.full(n, 5.0, np.float32), batch_size=128, seed=0, fill_last=True)
    timer = EpochTimer()
    model.fit(batches, epochs=epochs, verbose=0, callbacks=[timer])
    return n * (epochs - 1) / sum(timer.times[1:])


def first_step_cpu_seconds(head_builder, channels, optimizer) -> float:
    keras.utils.set_random_seed(0)
    model = head_builder()
    model.compile(optimizer=optimizer, loss="mean_squared_error")
    model.optimizer.build(model.trainable_variables)
    features, targets = np.zeros((128, channels), np.float32), np.full(128, 5.0, np.float32)
    start = time.process_time()
    model.train_on_batch(features, targets)
    return time.process_time() - start


def trace(backbone_name: str) -> None:
    from mlsp import backbones, features, heads, train

    boundaries = features.block_boundaries(backbones.load(backbone_name, "random"))
    build = lambda: heads.multi_3fc(boundaries)  # noqa: E731
    keras_adam = first_step_cpu_seconds(build, boundaries[-1], keras.optimizers.Adam(1e-4))
    fused_adam = first_step_cpu_seconds(build, boundaries[-1], train.FusedAdam(1e-4))
    print(f"Multi-3FC on {backbone_name}'s {len(boundaries) - 1} blocks, first step (trace + 1 step of 128), CPU seconds:")
    print(f"  Keras Adam : {keras_adam:6.1f} s")
    print(f"  FusedAdam  : {fused_adam:6.1f} s")
    print(f"ratio keras/fused first step: {keras_adam / fused_adam:.2f}")


def make_store(path, n, shape):
    from mlsp.store import FeatureWriter

    rng = np.random.default_rng(0)
    array = rng.normal(size=(n, 8, *shape)).astype(np.float16)
    with FeatureWriter(path, [str(i) for i in range(n)], 8, shape) as writer:
        for i in range(n):
            writer.write(i, array[i])
    return array


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--wide-images", type=int, default=256)
    parser.add_argument("--channels", type=int, default=1808)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trace", action="store_true", help="only compare the first step's CPU time of Keras' Adam and FusedAdam")
    parser.add_argument("--trace-backbone", default="inception_v3")
    args = parser.parse_args()
    if args.trace:
        trace(args.trace_backbone)
        return

    from mlsp import heads
    from mlsp.store import FeatureReader

    work = Path(tempfile.mkdtemp(prefix="mlsp-bench-train-"))
    array = make_store(work / "narrow.h5", args.images, (args.channels,))
    memory = rate(lambda: heads.single_3fc(args.channels), array, args.images, args.epochs, False)
    with FeatureReader(work / "narrow.h5") as reader:
        store = rate(lambda: heads.single_3fc(args.channels), reader, args.images, args.epochs, False)
    print(f"Single-3FC on {args.channels} narrow features, {args.images} images, batch 128:")
    print(f"  in memory : {memory:8.0f} samples/s")
    print(f"  HDF5      : {store:8.0f} samples/s")
    print(f"  ratio     : {store / memory:8.2f}   (target >= 0.8)")

    wide = make_store(work / "wide.h5", args.wide_images, (5, 5, args.channels))
    plain = rate(lambda: heads.pool_3fc(args.channels), wide, args.wide_images, args.epochs, False)
    xla = rate(lambda: heads.pool_3fc(args.channels), wide, args.wide_images, args.epochs, True)
    print(f"Pool-3FC on 5x5x{args.channels} wide features, {args.wide_images} images (in memory):")
    print(f"  without XLA : {plain:8.0f} samples/s")
    print(f"  with XLA    : {xla:8.0f} samples/s   (speed-up {xla / plain:.2f}x)")


if __name__ == "__main__":
    main()
