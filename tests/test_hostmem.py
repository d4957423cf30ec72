"""Host buffers for batches (dn_host_alloc): aligned, writable, freed with
their last view, page-locked only where a GPU is present."""
from __future__ import annotations

import gc

import numpy as np

from pydarknet._ffi import ffi, lib
from pydarknet.hostmem import HostBufferPool, host_array
from test_resources import rss_bytes


def test_host_array_is_aligned_writable_and_plain_without_a_gpu() -> None:
    array, pinned = host_array((3, 5, 7), pinned=True)
    assert array.shape == (3, 5, 7) and array.dtype == np.float32
    assert array.ctypes.data % 64 == 0
    array[...] = np.arange(array.size, dtype=np.float32).reshape(array.shape)
    assert array[2, 4, 6] == array.size - 1
    assert pinned == (lib.dn_cuda_device_count() > 0)
    assert host_array((0,), pinned=False)[0].size == 0


def test_host_arrays_are_freed_with_their_last_view() -> None:
    megabytes = 16
    n = megabytes * 2**20 // 4
    for _ in range(3):  # warm up
        host_array((n,), pinned=False)[0].fill(1)
    gc.collect()
    before = rss_bytes()
    view = None
    for k in range(100):  # 1.6 GB if nothing were freed
        array, _ = host_array((n,), pinned=True)
        array.fill(k)  # touch every page
        view = array[::2]  # a view outlives the array for one round
        del array
    assert view is not None and view[0] == 99
    del view
    gc.collect()
    assert rss_bytes() - before < 3 * megabytes * 2**20


def test_host_free_ignores_null_and_foreign_pointers() -> None:
    lib.dn_host_free(ffi.NULL)
    foreign = ffi.new("float[64]")
    lib.dn_host_free(foreign + 16)  # not from dn_host_alloc: left alone, no crash


def test_pool_reuses_the_smallest_fitting_buffer_and_replaces_small_ones() -> None:
    pool = HostBufferPool(pinned=False)
    a = pool.take((4, 10))
    b = pool.take((2, 10))
    assert pool.allocated == 2
    pool.give(a)
    pool.give(b)
    c = pool.take((1, 10))  # the 20-float buffer fits best
    assert np.shares_memory(c, b) and not np.shares_memory(c, a)
    assert len(pool._free) == 1
    pool.give(c)
    d = pool.take((10, 10))  # none fits: a new one replaces the smallest free one
    assert pool.allocated == 3 and not np.shares_memory(d, a) and not np.shares_memory(d, b)
    pool.give(d)
    assert len(pool._free) == 2
    sized = HostBufferPool(pinned=False, min_floats=1000)
    e = sized.take((3, 3))
    sized.give(e)
    f = sized.take((30, 30))  # the first buffer was made large enough
    assert sized.allocated == 1 and np.shares_memory(e, f)
