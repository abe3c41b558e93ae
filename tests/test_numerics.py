"""Profile and run compute alike: subnormals flushed, the same seeded weights, and a worker's
malloc serving tensors from its heap (edgepart.profiling.numerics, model_spec, runtime.worker)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

torch = pytest.importorskip("torch")

from edgepart.profiling.model_spec import build_model  # noqa: E402
from edgepart.profiling.numerics import torch_compute  # noqa: E402
from edgepart.profiling.trace import trace_model  # noqa: E402
from edgepart.runtime.split import load_model  # noqa: E402

TINY = torch.finfo(torch.float32).tiny  # the least normal float32; half of it is subnormal


def half_of_tiny() -> float:
    return float(torch.tensor([TINY]).mul_(0.5).item())


def test_torch_compute_flushes_subnormals_in_its_thread_and_the_threads_it_starts() -> None:
    torch.set_flush_denormal(False)  # IEEE, whatever an earlier test left (an in-process stage)
    assert half_of_tiny() > 0.0  # the control, without which nothing is shown
    threads = torch.get_num_threads()
    seen: list[float] = []
    with torch_compute(1):
        assert half_of_tiny() == 0.0
        assert torch.get_num_threads() == 1
        thread = threading.Thread(target=lambda: seen.append(half_of_tiny()))
        thread.start()
        thread.join()
    assert seen == [0.0]
    assert half_of_tiny() > 0.0  # restored
    assert torch.get_num_threads() == threads


def test_profile_and_run_build_the_same_weights_without_touching_the_global_generator() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    profiled = trace_model("torchvision:resnet18", (1, 3, 32, 32)).graph_module.state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    run = load_model("torchvision:resnet18", seed=0).state_dict()
    assert profiled.keys() == run.keys()
    assert all(torch.equal(profiled[k], run[k]) for k in run)
    other = build_model("torchvision:resnet18", seed=1).state_dict()
    assert not torch.equal(other["conv1.weight"], run["conv1.weight"])


def test_a_language_model_is_built_from_its_seed_without_touching_the_global_generator(
        ) -> None:
    # build_causal_lm seeded torch's global generator and left it so (every later draw in the
    # process followed from its seed)
    pytest.importorskip("transformers")
    from edgepart.llm.build import build_causal_lm
    from edgepart.llm.configs import SHIPPED, DecoderShape

    shape = DecoderShape.from_config(SHIPPED["tiny-llama"].config, "tiny-llama")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_causal_lm(shape, "cpu", seed=0).state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    again = build_causal_lm(shape, "cpu", seed=0).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = build_causal_lm(shape, "cpu", seed=1).state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first)


HEAP_CHECK = """
import ctypes, sys
if sys.argv[1] == "set":
    from edgepart.runtime.worker import _reuse_freed_memory
    _reuse_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
address = libc.malloc(8 << 20)
with open("/proc/self/maps") as maps:
    heap = next(line for line in maps if line.rstrip().endswith("[heap]"))
low, high = (int(x, 16) for x in heap.split()[0].split("-"))
print(low <= address < high)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")
def test_a_worker_serves_8_MiB_blocks_from_its_heap_not_from_fresh_mappings() -> None:
    def from_heap(mode: str) -> bool:
        out = subprocess.run([sys.executable, "-c", HEAP_CHECK, mode], capture_output=True,
                             text=True, check=True)
        return out.stdout.strip() == "True"

    assert not from_heap("default")  # glibc maps a block above 128 KiB afresh at first
    assert from_heap("set")
