"""How torch computes wherever edgepart times or runs a model: on a set number of intra-op
threads, with subnormal floats flushed to zero.

Why flush. edgepart builds models with random weights (it never downloads trained ones), and
random weights can drive activations into the subnormal range (below 1.18e-38 in float32): a
SiLU or sigmoid of a large negative input is one way. This host's x86 cores compute on
subnormals through a slow path; which layers meet them depends on the random draw, so the same
layer was 20x slower in one profile than in another. Measured (efficientnet_b0 at 112x112, one
thread, looped timing): the first block's SiLU 1.25 ms unflushed against 56 us flushed; in
``bench/estimator.py``'s traces its layer times were 0.03x to 3.4x those of the next class
measured a minute later, and ``bench/fidelity.py``'s stages ran at 1.3-3.0x their profiled CPU
time. A device's time should be its arithmetic's, not an accident of the draw, and the profile
and the run must compute alike: both flush (``torch.set_flush_denormal``, x86's FTZ/DAZ
modes). Trained weights rarely produce subnormals, so flushing changes no result that matters;
outputs compared by the runtime are computed flushed on both sides.

The mode is per thread and a new thread inherits its creator's, so a worker sets it first
thing, before its RPC and compute threads start (:func:`set_torch_compute`); timing code wraps
its work in :func:`torch_compute`, which restores what it found.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded", "set_torch_compute", "torch_compute"]


def set_torch_compute(threads: int | None) -> tuple[int, bool]:
    """Compute on ``threads`` intra-op threads (None: leave it) with subnormals flushed, in this
    thread and the threads it starts from now on; returns the (threads, flush) it replaced."""
    before = torch.get_num_threads(), _flushing()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return before


@contextmanager
def torch_compute(threads: int | None) -> Iterator[None]:
    """:func:`set_torch_compute` for the ``with`` block, restoring threads and mode after."""
    threads_before, flush_before = set_torch_compute(threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.set_flush_denormal(flush_before)


def _flushing() -> bool:
    """Whether this thread flushes subnormals now (torch has no getter: one product tells)."""
    smallest_normal = torch.finfo(torch.float32).tiny
    return bool(torch.tensor([smallest_normal]).mul_(0.5).item() == 0.0)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from torch's CPU generator seeded with ``seed`` (a model's random weights: the
    profile, the run and a probe build the same ones), leaving torch's global random state as
    it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
