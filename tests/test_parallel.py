"""Data-parallel training over CPU replicas: the exact all-reduce mode, the
darknet mode's averaging and learning-rate rule, checkpoints and failure."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import relative_error
from pydarknet import NumericError
from pydarknet.replicas import Trainer

# A small YOLOv2-style network: conv+BN+leaky, maxpool, route, reorg, region.
NET = """[net]
batch={batch}
subdivisions={subdivisions}
width=32
height=32
channels=3
momentum={momentum}
decay={decay}
learning_rate={lr}
policy=constant
max_batches=100

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-3

[reorg]
stride=2

[route]
layers=-1,-3

[convolutional]
size=1
stride=1
pad=1
filters=14
activation=linear

[region]
anchors=1,1,2.5,2.5
bias_match=1
classes=2
coords=4
num=2
softmax=1
jitter=.2
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
thresh=.6
random=0
"""


def write_cfg(tmp_path: Path, name: str, *, batch: int, subdivisions: int = 1, lr: float = .01,
              momentum: float = .9, decay: float = .0005) -> Path:
    path = tmp_path / name
    path.write_text(NET.format(batch=batch, subdivisions=subdivisions, lr=lr, momentum=momentum,
                               decay=decay))
    return path


def fixed_data(steps: int, images: int, truth_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same images and boxes in the same order for every configuration."""
    rng = np.random.default_rng(42)
    data = []
    for _ in range(steps):
        x = rng.random((images, 3, 32, 32), dtype=np.float32)
        truth = np.zeros((images, truth_size), np.float32)
        for i in range(images):
            for b in range(int(rng.integers(1, 4))):
                truth[i, 5 * b:5 * b + 5] = [rng.uniform(.1, .9), rng.uniform(.1, .9),
                                             rng.uniform(.1, .5), rng.uniform(.1, .5),
                                             rng.integers(0, 2)]
        data.append((x, truth))
    return data


def params_of(trainer: Trainer, replica: int = 0) -> np.ndarray:
    net = trainer.network(replica)
    return np.concatenate([v for i in range(len(net)) for k, v in net.params(i).items()
                           if k not in ("rolling_mean", "rolling_variance")])


def run(trainer: Trainer, data: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for x, truth in data:
        trainer.step(x, truth)


@pytest.mark.parametrize("replicas,per_replica", [(2, 4), (4, 2)])
def test_allreduce_equals_one_replica_with_the_whole_batch(tmp_path: Path, replicas: int,
                                                           per_replica: int) -> None:
    """N replicas x batch b == 1 replica x batch N*b.  The single network
    uses subdivisions=N so that batch norm sees the same groups of images
    (each replica's share) in training mode."""
    data = fixed_data(5, 8, 150)
    single_cfg = write_cfg(tmp_path, "one.cfg", batch=8, subdivisions=replicas)
    multi_cfg = write_cfg(tmp_path, "many.cfg", batch=per_replica)
    with Trainer(single_cfg, seed=3, threads=1) as one, \
            Trainer(multi_cfg, replicas=replicas, sync="allreduce", seed=3, threads=1) as many:
        np.testing.assert_array_equal(params_of(one), params_of(many))
        run(one, data)
        run(many, data)
        reference = params_of(one)
        assert relative_error(params_of(many), reference) < 1e-5
        for r in range(1, replicas):  # every replica applied the same update
            np.testing.assert_array_equal(params_of(many, r), params_of(many, 0))
        assert many.network(0).current_batch == one.network(0).current_batch == 5
        assert many.network(0).seen == one.network(0).seen == 40
        assert not np.array_equal(reference, params_of(Trainer(single_cfg, seed=3)))


def test_darknet_mode_replicas_drift_then_sync_to_the_mean(tmp_path: Path) -> None:
    data = fixed_data(8, 8, 150)
    cfg = write_cfg(tmp_path, "net.cfg", batch=4)
    with Trainer(cfg, replicas=2, sync="darknet", sync_every=4, seed=5, threads=1) as synced, \
            Trainer(cfg, replicas=2, sync="darknet", sync_every=10**6, seed=5, threads=1) as free:
        for step, (x, truth) in enumerate(data, 1):
            result = synced.step(x, truth)
            free.step(x, truth)
            a, b = params_of(synced, 0), params_of(synced, 1)
            if step % 4 == 0:
                assert result.synced
                np.testing.assert_array_equal(a, b)  # bitwise identical right after a sync
                if step == 4:  # the unsynchronised run holds the pre-sync weights
                    expected = (params_of(free, 0) + params_of(free, 1)) / 2
                    assert relative_error(a, expected) < 1e-6
            else:
                assert not result.synced
                assert not np.array_equal(a, b)  # replicas differ between syncs
        # darknet's seen: each sync adds sync_every * (N-1) * batch * subdivisions
        assert synced.network(0).seen == 8 * 4 + 2 * 4 * 1 * 4
        assert synced.network(0).current_batch == 16


def test_darknet_mode_sync_every_step_equals_one_replica(tmp_path: Path) -> None:
    """With sync_every=1, momentum 0 and decay 0, darknet mode equals one
    replica with batch N*b and N times the cfg's learning rate:

        each replica:  w_i = w + (N*lr / b) * delta_i        (lr x N, batch b)
        the average:   mean_i w_i = w + (N*lr / b) * (1/N) * sum_i delta_i
                                  = w + (lr / b) * sum_i delta_i
        one replica:   w + ((N*lr) / (N*b)) * sum_i delta_i = w + (lr / b) * sum_i delta_i

    (delta_i: the summed negative gradient of replica i's b images.)  The
    single network uses subdivisions=N so batch norm sees the same groups."""
    n, b, lr = 2, 4, .01
    data = fixed_data(5, n * b, 150)
    multi = write_cfg(tmp_path, "many.cfg", batch=b, lr=lr, momentum=0, decay=0)
    single = write_cfg(tmp_path, "one.cfg", batch=n * b, subdivisions=n, lr=n * lr, momentum=0,
                       decay=0)
    with Trainer(multi, replicas=n, sync="darknet", sync_every=1, seed=9, threads=1) as many, \
            Trainer(single, seed=9, threads=1) as one:
        run(many, data)
        run(one, data)
        assert relative_error(params_of(many), params_of(one)) < 1e-5
        assert many.network(0).seen == one.network(0).seen


def test_warmup_on_one_replica_then_copy(tmp_path: Path) -> None:
    data = fixed_data(4, 8, 150)
    cfg = write_cfg(tmp_path, "net.cfg", batch=4)
    with Trainer(cfg, replicas=2, warmup_single=2, seed=1, threads=1) as trainer:
        assert trainer.images_per_step == 4
        trainer.step(data[0][0][:4], data[0][1][:4])
        second = trainer.step(data[1][0][:4], data[1][1][:4])
        assert second.replicas_used == 1
        np.testing.assert_array_equal(params_of(trainer, 0), params_of(trainer, 1))
        assert trainer.images_per_step == 8
        third = trainer.step(*data[2])
        assert third.replicas_used == 2
        assert third.train.learning_rate == pytest.approx(2 * .01)  # darknet: lr x N after


def threads_of_process() -> set[int]:
    """The process's native thread ids (a set, so that a thread of an earlier
    test that ends meanwhile does not count as one of ours)."""
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def test_a_failing_replica_stops_the_run(tmp_path: Path) -> None:
    data = fixed_data(3, 8, 150)
    cfg = write_cfg(tmp_path, "net.cfg", batch=4)
    before = threads_of_process()
    trainer = Trainer(cfg, replicas=2, seed=2, threads=2)
    assert threads_of_process() - before  # replica threads and their pools
    trainer.step(*data[0])
    good = tmp_path / "good.weights"
    trainer.save_weights(good)
    saved = good.read_bytes()
    x, truth = data[1]
    x = x.copy()
    x[5, 0, 3, 3] = np.nan  # an image of replica 1's share
    with pytest.raises(NumericError) as info:
        trainer.step(x, truth)
    message = str(info.value)
    # the trainer and the replica's network name the same iteration (the
    # pass's own count lagged one behind with 2 replicas), and NaN as NaN
    assert "replica 1 of 2 failed at iteration 2: the loss is NaN at iteration 2" in message, message
    trainer.close()
    assert not threads_of_process() - before  # every thread joined
    assert good.read_bytes() == saved


def test_checkpoint_mid_run_resumes_iteration_and_seen(tmp_path: Path) -> None:
    data = fixed_data(6, 8, 150)
    cfg = write_cfg(tmp_path, "net.cfg", batch=4)
    with Trainer(cfg, replicas=2, sync_every=2, seed=4, threads=1) as trainer:
        run(trainer, data[:3])
        checkpoint = tmp_path / "mid.weights"
        trainer.save_weights(checkpoint)
        iteration, seen = trainer.network(0).current_batch, trainer.network(0).seen
    with Trainer(cfg, replicas=2, sync_every=2, seed=4, threads=1) as resumed:
        resumed.load_weights(checkpoint)
        assert resumed.network(1).current_batch == iteration
        assert resumed.network(1).seen == seen
        result = resumed.step(*data[3])
        assert result.train.batch_num == iteration + 1 + (2 if result.synced else 0)


def test_allreduce_with_one_replica_equals_plain_training(tmp_path: Path) -> None:
    """One replica in all-reduce mode takes the all-reduce path (gradients,
    a one-rank reduction, update: NCCL's on a GPU) and must train exactly as
    the plain step does, subdivisions included."""
    data = fixed_data(4, 8, 150)
    cfg = write_cfg(tmp_path, "net.cfg", batch=8, subdivisions=2)
    with Trainer(cfg, seed=3, threads=1) as plain, \
            Trainer(cfg, replicas=1, sync="allreduce", seed=3, threads=1) as reduced:
        run(plain, data)
        for x, truth in data:
            assert reduced.step(x, truth).synced  # the all-reduce ran
        assert relative_error(params_of(reduced), params_of(plain)) < 1e-6
        assert reduced.network(0).seen == plain.network(0).seen == 32
        assert reduced.network(0).current_batch == plain.network(0).current_batch == 4
