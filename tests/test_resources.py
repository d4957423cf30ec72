"""Memory and threads: no leak across 10,000 predictions or many networks;
one network per thread runs in parallel with the same results."""
from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest

from pydarknet import ArgumentError, Detector, Network


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def test_10000_predictions_do_not_grow_memory(tiny_cfg: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    with Detector(tiny_cfg, None, names=["a", "b"], threads=1) as detector:
        detector.network.randomize(3)
        x = np.random.default_rng(1).random(detector.network.input_shape, dtype=np.float32)
        assert 0 < len(detector.detect(frame, thresh=.75)) < 100  # results are allocated
        for _ in range(500):  # warm up allocator pools
            detector.detect(frame, thresh=.75)
            detector.network.predict(x)
        gc.collect()
        before = rss_bytes()
        for _ in range(10_000):
            detector.detect(frame, thresh=.75)
            detector.network.predict(x)
        gc.collect()
        growth = rss_bytes() - before
    # each call allocates candidate buffers and results (~10 KiB); a leak of
    # even one of them per call would be ~100 MiB here
    assert growth < 4 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"


def test_networks_are_freed(tiny_cfg: Path) -> None:
    for _ in range(20):
        Network(tiny_cfg).close()
    gc.collect()
    before = rss_bytes()
    for i in range(300):
        net = Network(tiny_cfg, threads=2)
        net.predict(np.zeros(net.input_shape, np.float32))
        if i % 2:
            net.close()  # explicit close and garbage collection both free
        del net
    gc.collect()
    assert rss_bytes() - before < 4 * 2**20


def test_one_network_per_thread(tiny_cfg: Path) -> None:
    inputs = [np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32) for i in range(8)]
    weights = tiny_cfg.parent / "tiny.weights"
    with Network(tiny_cfg) as net:
        net.randomize(5)
        net.save_weights(weights)
        expected = [net.predict(x) for x in inputs]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with Network(tiny_cfg, weights, threads=2) as own:
                results[worker] = [own.predict(x) for _ in range(50) for x in inputs][-8:]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for worker in range(4):
        for ours, ref in zip(results[worker], expected):
            np.testing.assert_array_equal(ours, ref)


def test_shared_network_is_serialised(tiny_cfg: Path) -> None:
    """Several threads calling one Network get correct results (calls are
    serialised by the Network's lock)."""
    with Network(tiny_cfg) as net:
        net.randomize(2)
        inputs = [np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32)
                  for i in range(4)]
        expected = [net.predict(x) for x in inputs]
        failures: list[int] = []

        def work(i: int) -> None:
            for _ in range(200):
                if not np.array_equal(net.predict(inputs[i]), expected[i]):
                    failures.append(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_thread_count(tiny_cfg: Path, threads: int) -> None:
    x = np.random.default_rng(9).random((1, 3, 32, 32), dtype=np.float32)
    with Network(tiny_cfg, threads=1) as one, Network(tiny_cfg, threads=threads) as many:
        one.randomize(1)
        many.randomize(1)
        np.testing.assert_array_equal(one.predict(x), many.predict(x))


def test_arrays_over_engine_memory_outlive_close(tiny_cfg: Path) -> None:
    """params(), grads() and predict(copy=False) arrays read what they were
    given after the network is closed (darknet users keep weights arrays
    past a `with` block); the memory goes when the last of them does."""
    with Network(tiny_cfg, train=True) as net:
        net.randomize(5)
        weights = net.params(0)["weights"]
        expected = weights.copy()
        x = np.random.default_rng(0).random(net.input_shape, dtype=np.float32)
        out = net.predict(x, copy=False)[0]
        out_expected = out.copy()
        grads = net.grads(0)["weights"]
    garbage = [np.full(weights.size, 7, np.float32) for _ in range(50)]  # would reuse freed memory
    np.testing.assert_array_equal(weights, expected)
    np.testing.assert_array_equal(out, out_expected)
    assert grads.shape == weights.shape
    assert not out.flags.writeable and weights.flags.writeable
    del garbage
    with pytest.raises(ArgumentError, match="closed"):
        net.params(0)


def test_resize_refuses_while_a_no_copy_output_is_alive(tiny_cfg: Path) -> None:
    with Network(tiny_cfg) as net:
        x = np.random.default_rng(0).random(net.input_shape, dtype=np.float32)
        out = net.predict(x, copy=False)
        first = out[0, :1]  # a view of the view keeps it alive too
        del out
        with pytest.raises(ArgumentError, match=r"cannot resize the network: 1 array from predict\(copy=False\)"):
            net.resize(64, 64)
        with pytest.raises(ArgumentError, match="cannot change the batch"):
            net.set_batch(2)
        assert np.isfinite(first).all()
        del first
        net.resize(64, 64)  # nothing views the outputs now
        net.set_batch(2)
        weights = net.params(0)["weights"]  # parameters stay put across resizes
        net.resize(96, 96)
        assert np.isfinite(weights).all()


def test_replica_arrays_outlive_the_trainer(tiny_cfg: Path, tmp_path: Path) -> None:
    from pydarknet.replicas import Trainer

    trainer = Trainer(tiny_cfg, replicas=2, seed=3, threads=1)
    biases = trainer.network(1).params(0)["biases"]
    expected = biases.copy()
    replica = trainer.network(0)
    trainer.close()
    np.testing.assert_array_equal(biases, expected)
    with pytest.raises(ArgumentError, match="trainer .*closed"):
        replica.params(0)
