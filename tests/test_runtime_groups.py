"""Device groups through the RPC runtime: a split stage and a replicated stage end to end (every
request answered once, equal to the unsplit model), a replica killed mid-stream, the scheduler.

``ChainNet`` is a small chain (conv, relu, max pool, conv, relu, flatten, linear) so every
layer has a split shape; the instances come from the profiling trace with fixed layer times.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("torch")

import torch
from test_fidelity import thread_cpu_s
from test_runtime_support import let_workers_import_test_models, workers_of
from torch import nn

from edgepart.cost import Region, SplitGroup, split_order
from edgepart.errors import InputError
from edgepart.instance import load_instance
from edgepart.plan import Plan, Scheme
from edgepart.profiling.trace import trace_model, unit_shape
from edgepart.runtime import groups
from edgepart.runtime.driver import run
from edgepart.runtime.emulate import Mode
from edgepart.runtime.groups import (
    Key,
    Mailbox,
    Member,
    Obsolete,
    PeerError,
    ReplicaScheduler,
    Slice,
    SlicePart,
    SplitRole,
    cut,
    drop_replicas,
    lead_stage,
    paste,
    split_roles,
    split_traffic,
)
from edgepart.runtime.prepare import RunOptions, Slowdown
from edgepart.runtime.split import build_stage, split_plan

SHAPE = (1, 3, 16, 16)
SPEC = "test_runtime_groups:ChainNet"


class ChainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: Any) -> Any:
        x = self.pool(self.relu1(self.conv1(x)))
        return self.fc(self.flat(self.relu2(self.conv2(x))))


@pytest.fixture(autouse=True)
def _workers_import_the_test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    let_workers_import_test_models(monkeypatch)


def chain_instance(devices: int = 3, times: Sequence[float] | None = None,
                   model: nn.Module | None = None, shape: tuple[int, ...] = SHAPE
                   ) -> dict[str, Any]:
    """``model`` (ChainNet) on ``devices`` devices (``times``: each device's time per layer, 1 ms
    default), every layer with its split shape (none for a layer that has none: an add)."""
    traced = trace_model(model or ChainNet(), shape)
    size = {u.id: sum(traced.value_bytes[o] for o in u.outputs) for u in traced.units}
    per_device = list(times or [1e-3] * devices)
    shapes = {u.id: unit_shape(traced, u) for u in traced.units}
    layers = [{"id": u.id, "op": u.op, "flops": 1.0, "param_bytes": 0.0,
               "output_bytes": size[u.id], "nodes": list(u.nodes),
               "time_s": {f"c{k}": t for k, t in enumerate(per_device)},
               "meta": {"shape": shapes[u.id]} if shapes[u.id] else {}} for u in traced.units]
    return {
        "format_version": 1, "name": "chainnet",
        "model": {"name": "chainnet", "input_bytes": traced.value_bytes[traced.input_node],
                  "layers": layers,
                  "edges": [{"src": s, "dst": d, "bytes": size[s]} for s, d in traced.edges]},
        "devices": [{"id": f"d{k}", "class": f"c{k}", "memory_bytes": 1e9}
                    for k in range(len(per_device))],
        "links": {"default": {"bandwidth_bytes_per_s": 1e9, "latency_s": 1e-4}},
        "meta": {"input_shape": list(shape)},
    }


LAYERS = ["conv1", "relu1", "pool", "conv2", "relu2", "flat", "fc"]


def plan(*stages: dict[str, Any]) -> Plan:
    return Plan.from_dict({"format_version": 1, "instance": "chainnet", "stages": list(stages)})


def run_plan(data: dict[str, Any], p: Plan, **options: Any) -> dict[str, Any]:
    report = run(load_instance(data), p, RunOptions(SPEC, **options))
    assert workers_of(os.getpid()) == []
    assert report["completed"] == report["requests"]
    assert report["mismatches"] == 0
    return report


def test_the_instance_has_the_layers_the_plans_name() -> None:
    assert [layer["id"] for layer in chain_instance()["model"]["layers"]] == LAYERS


def test_split_stages_by_grid_rows_and_channels_match_the_model() -> None:
    # stage 0: conv1 by grid (1 x 2 tiles for 2 devices: columns) and the pool by rows over
    # d0, d1 (halos at the cuts), then conv2 and fc by output channels over d2, d3 (stage 1's
    # lead d2): every answer must equal the unsplit model
    p = plan({"devices": ["d0", "d1"], "mode": "split", "layers": LAYERS[:3],
              "schemes": {"conv1": "grid", "pool": "rows"}},
             {"devices": ["d2", "d3"], "mode": "split", "layers": LAYERS[3:],
              "schemes": {"conv2": "outc", "fc": "outc"}})
    report = run_plan(chain_instance(4), p, requests=8, inflight=2)
    assert report["duplicates_dropped"] == 0


def test_a_replicated_stage_answers_every_request_in_order_of_ids() -> None:
    p = plan({"device": "d0", "layers": LAYERS[:3]},
             {"devices": ["d1", "d2"], "mode": "replicate", "layers": LAYERS[3:]})
    report = run_plan(chain_instance(), p, requests=12, inflight=4)
    served = report["stages"][1]["replica_requests"]
    # two equal replicas with 4 requests in flight: the scheduler must use both
    assert set(served) == {"d1", "d2"} and min(served.values()) >= 2
    assert sum(served.values()) == 12


def test_a_replica_killed_mid_stream_loses_no_request() -> None:
    p = plan({"device": "d0", "layers": LAYERS[:3]},
             {"devices": ["d1", "d2"], "mode": "replicate", "layers": LAYERS[3:]})
    report = run_plan(chain_instance(), p, requests=14, inflight=4, fail_stage=1, fail_after=3)
    assert report["failures"] == 1
    assert report["replans"] == 0  # d2 took d1's share without a re-plan
    assert report["failure_events"][0]["device"] == "d1"
    assert report["final_plan"]["stages"][1] == {"device": "d2",
                                                   "layers": LAYERS[3:]}


class AvgNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x: Any) -> Any:
        return self.avg(self.conv(x))


def test_a_layer_the_runtime_cannot_split_is_refused_in_one_line() -> None:
    # an average pool with padding by rows: the padding would count in the mean at the cut
    p = plan({"devices": ["d0", "d1"], "mode": "split", "layers": ["conv", "avg"],
              "schemes": {"conv": "rows", "avg": "rows"}})
    data = chain_instance(2, model=AvgNet())
    with pytest.raises(InputError, match=r"^plan: stages\[0\]\.schemes\.avg: `edgepart run` "
                                         r"cannot split a AvgPool2d by rows$"):
        run(load_instance(data), p, RunOptions("test_runtime_groups:AvgNet"))


def test_the_scheduler_deals_in_proportion_to_speed() -> None:
    # replica 1 computes in 1 s, replica 2 in 3 s. Scores -(q+1) x service: with nothing
    # answered, picks go 1 (-1 vs -3), 1 (-2 vs -3), 1 (-3 vs -3: tie to the earlier), 2
    # (-4 vs -3): 3 to 1 for every 4, the ratio of their rates 1/1 : 1/3
    scheduler = ReplicaScheduler({1: 1.0, 2: 3.0})
    assert [scheduler.pick() for _ in range(4)] == [1, 1, 1, 2]
    scheduler.release(1)  # now queues 2 and 1: scores -3 and -6
    assert scheduler.pick() == 1
    scheduler.observe(2, 0.0)  # measured 0 s: service 0.5 x 3 + 0.5 x (3 - 0.3 x 3) = 2.55
    assert scheduler.score(2) == pytest.approx(-2 * 2.55)


def test_dropping_a_replica_keeps_the_others() -> None:
    p = plan({"devices": ["d0", "d1", "d2"], "mode": "replicate", "layers": LAYERS})
    assert drop_replicas(p, {"d1"}) == plan(
        {"devices": ["d0", "d2"], "mode": "replicate", "layers": LAYERS})
    assert drop_replicas(p, {"d0", "d1", "d2"}) is None
    split = plan({"devices": ["d0", "d1"], "mode": "split", "layers": LAYERS})
    assert drop_replicas(split, {"d1"}) is None


@pytest.mark.slow
def test_pad_emulation_of_a_hybrid_plan_reports_measured_against_predicted() -> None:
    # d2 is half as fast as d1 (8 ms a layer, 4 for the others): stage 1 (conv2, relu2, flat,
    # fc) takes 16 ms on d1 and 32 ms on d2, so replicated its period is 1 / (1/16 + 1/32)
    # = 10.7 ms; stage 0 split by rows over d0 and d3 (equal speeds) halves 3 x 4 = 12 ms plus
    # exchanges: the plan's period is stage 1's, about 94 answers a second
    data = chain_instance(4, [0.004, 0.004, 0.008, 0.004])
    p = plan({"devices": ["d0", "d3"], "mode": "split", "layers": LAYERS[:3],
              "schemes": {"conv1": "rows", "pool": "rows"}},
             {"devices": ["d1", "d2"], "mode": "replicate", "layers": LAYERS[3:]})
    report = run_plan(data, p, requests=30, emulate=Mode.PAD, time_scale=None)
    assert report["predicted_throughput_per_s"] == pytest.approx(1 / (1 / (1 / 0.016 + 1 / 0.032)),
                                                                 rel=1e-9)
    if report["host_keeps_up"]:
        assert report["throughput_per_s"] == pytest.approx(
            report["predicted_throughput_per_s"], rel=0.3)
    served = report["stages"][1]["replica_requests"]
    assert served["d1"] > served["d2"] > 0  # the faster replica serves more


# modules built in the test: one built when this file is imported would draw from torch's
# random generator, which the workers seed before they import ChainNet from here
ROW_MODULES: dict[str, Any] = {
    "conv k3 s1 p1": lambda: nn.Conv2d(4, 6, 3, stride=1, padding=1),
    "conv k5 s2 p2": lambda: nn.Conv2d(4, 6, 5, stride=2, padding=2),
    "conv k3 s2 p0": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=0),
    "depthwise k3 p1": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4),
    "maxpool k3 s2 p1": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "maxpool k2": lambda: nn.MaxPool2d(2),
    "avgpool k2": lambda: nn.AvgPool2d(2),
}
CHANNEL_MODULES: dict[str, Any] = {
    "conv": lambda: nn.Conv2d(4, 6, 3, padding=1), "linear": lambda: nn.Linear(5, 7),
    "maxpool": lambda: nn.MaxPool2d(2),
}


WHOLE_INPUT = Region((0, 4), (0, 13), (0, 11))
"""The region the row and grid tests' input ``x`` (1 x 4 x 13 x 11) holds."""


Pair = tuple[int, int]


def window(module: Any) -> tuple[Pair, Pair, Pair]:
    """Kernel, stride, padding of a conv or pool module, as pairs (no dilation here)."""
    def pair(v: Any) -> Pair:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
    return pair(module.kernel_size), pair(module.stride), pair(module.padding)


@pytest.mark.parametrize("text", ROW_MODULES)
@pytest.mark.parametrize("cuts", [[0, 3, 7], [0, 1, 2, 7], [0, 7, 7]], ids=str)
def test_row_slices_with_halos_glue_into_the_whole_output(text: str, cuts: list[int]) -> None:
    # brute force: the module on the whole input, cut into the same output rows (a cut past
    # the end leaves a device an empty slice)
    module = ROW_MODULES[text]()
    x = torch.randn(1, 4, 13, 11)
    whole = module(x)
    rows = [(a, min(z, whole.shape[2])) for a, z in itertools.pairwise(cuts)]
    rows[-1] = (rows[-1][0], whole.shape[2])
    pieces = []
    for a, z in rows:
        part = SlicePart("n", Scheme.ROWS, Region((0, whole.shape[1]), (a, z),
                                                 (0, whole.shape[3])), (4, 13, 11), *window(module))
        s = Slice(module, part)
        if not s.empty:
            pieces.append(s(cut(x, WHOLE_INPUT, s.reads)))
    torch.testing.assert_close(torch.cat(pieces, 2), whole)


@pytest.mark.parametrize("text", CHANNEL_MODULES)
def test_channel_slices_glue_into_the_whole_output(text: str) -> None:
    module = CHANNEL_MODULES[text]()
    x = torch.randn(1, 5) if isinstance(module, nn.Linear) else torch.randn(1, 4, 8, 8)
    whole = module(x)
    channels = whole.shape[1]
    inp = (5, 1, 1) if isinstance(module, nn.Linear) else (4, 8, 8)
    size = (1, 1) if isinstance(module, nn.Linear) else tuple(whole.shape[2:])  # rows, columns
    pieces = []
    for c in [(0, channels // 3), (channels // 3, channels)]:
        region = Region(c, (0, size[0]), (0, size[1]))
        s = Slice(module, SlicePart("n", Scheme.OUTC, region, inp))
        pieces.append((region, s(cut(x, Region((0, inp[0]), (0, inp[1]), (0, inp[2])), s.reads))))
    out = Region((0, channels), (0, size[0]), (0, size[1]))
    torch.testing.assert_close(paste(out, pieces), whole)


@pytest.mark.parametrize("text", ["conv k3 s1 p1", "conv k5 s2 p2", "maxpool k3 s2 p1"])
def test_grid_tiles_with_halos_glue_into_the_whole_output(text: str) -> None:
    # brute force: the module on the whole input; a 2 x 3 grid of unequal tiles
    module = ROW_MODULES[text]()
    x = torch.randn(1, 4, 13, 11)
    whole = module(x)
    h, w = whole.shape[2], whole.shape[3]
    tiles = [Slice(module, SlicePart("n", Scheme.GRID, Region((0, whole.shape[1]), rows, cols),
                                     (4, 13, 11), *window(module)))
             for rows in [(0, h // 3), (h // 3, h)] for cols in [(0, 1), (1, w // 2), (w // 2, w)]]
    pieces = [(t.part.region, t(cut(x, WHOLE_INPUT, t.reads))) for t in tiles]
    out = Region((0, whole.shape[1]), (0, h), (0, w))
    torch.testing.assert_close(paste(out, pieces[::-1]), whole)  # any order of tiles


def test_paste_frames_the_region_with_the_padding_once() -> None:
    # need: channels [0, 1), rows [2, 5), columns [0, 2) from two pieces (row 2, rows 3-4),
    # framed by 1 row above, none below, 1 column each side, of -inf (a max pool's padding):
    # a 1 x 1 x 4 x 4 tensor, by hand
    inf = float("-inf")
    need = Region((0, 1), (2, 5), (0, 2))
    top = torch.tensor([[[[1.0, 2.0]]]])
    rest = torch.tensor([[[[3.0, 4.0], [5.0, 6.0]]]])
    out = paste(need, [(Region((0, 1), (3, 5), (0, 2)), rest),
                       (Region((0, 1), (2, 3), (0, 2)), top)], (1, 0, 1, 1), inf)
    torch.testing.assert_close(out, torch.tensor([[[[inf, inf, inf, inf], [inf, 1.0, 2.0, inf],
                                                    [inf, 3.0, 4.0, inf],
                                                    [inf, 5.0, 6.0, inf]]]]))


def test_a_slice_that_reads_one_whole_piece_without_padding_copies_nothing() -> None:
    # a 2 x 2 max pool, stride 2, output rows [0, 3) of a 4 x 6 x 6 input: reads input rows
    # [0, 6), all of it, with no padding: its input is the piece itself; a 3 x 3 conv with
    # padding 1 on output rows [0, 3) reads rows [0, 4) framed by 1 zero row above and 1 zero
    # column each side: a new 4 x 5 x 8 tensor
    x = torch.randn(1, 4, 6, 6)
    whole = Region((0, 4), (0, 6), (0, 6))
    pool = Slice(nn.MaxPool2d(2), SlicePart("n", Scheme.ROWS, Region((0, 4), (0, 3), (0, 3)),
                                            (4, 6, 6), (2, 2), (2, 2), (0, 0)))
    assert pool.assemble([(whole, x)]) is x
    conv = nn.Conv2d(4, 2, 3, padding=1)
    s = Slice(conv, SlicePart("n", Scheme.ROWS, Region((0, 2), (0, 3), (0, 6)), (4, 6, 6),
                              *window(conv)))
    framed = s.assemble([(s.reads, cut(x, whole, s.reads))])
    assert framed.shape == (1, 4, 5, 8)
    assert float(framed[:, :, 0].abs().sum() + framed[:, :, :, [0, 7]].abs().sum()) == 0.0
    torch.testing.assert_close(s.output(framed), conv(x)[:, :, :3])


# --- split runs in one process: members in threads, a wire that counts what it carries ---------

EPOCH = 1


class LocalWire:
    """Member ``me``'s wire to members in threads of this process (rank = index in the split
    order): a start queues the helper's job, a post fills the receiver's mailbox."""

    def __init__(self, boxes: list[Mailbox], jobs: list[queue.Queue[Any]], me: int,
                 log: list[tuple[int, int]], events: list[tuple[int, str]]) -> None:
        self.boxes, self.jobs, self.me, self.log, self.events = boxes, jobs, me, log, events

    def start(self, rank: int, key: Key, request: int, piece: torch.Tensor | None) -> None:
        self.log.append((rank, 0 if piece is None else piece.numel()))
        self.events.append((self.me, "start"))
        if piece is not None:
            self.boxes[rank].put(key, piece)
        self.jobs[rank].put((key, request))

    def post(self, rank: int, key: Key, piece: torch.Tensor) -> None:
        self.log.append((rank, piece.numel()))
        self.events.append((self.me, "post"))
        self.boxes[rank].put(key, piece)

    def take(self, keys: Sequence[Key]) -> list[torch.Tensor]:
        self.events.append((self.me, "take"))
        return self.boxes[self.me].take(EPOCH, keys, lambda: True)


def split_in_process(model: nn.Module, data: dict[str, Any], stage: dict[str, Any],
                     requests: int = 3, paced: list[tuple[int, int]] | None = None,
                     lead_spent: list[tuple[float, float]] | None = None,
                     events: list[tuple[int, str]] | None = None
                     ) -> tuple[list[tuple[int, int]], SplitRole, Any]:
    """Run one split stage holding the whole model in this process, each helper in a thread;
    every answer must equal the model's. Returns the wire's log (receiver, elements), the
    lead's role and the traced model; ``paced`` collects (member, request) of each paced band
    of a slice; with ``lead_spent``, the lead's pace sleeps 20 ms a band and each request's
    :meth:`~edgepart.runtime.groups.Member.spent_in_runs` is collected; ``events`` collects
    (member, what) of every start, post, take and computed band, in the order they happen."""
    inst = load_instance(data)
    p = plan(stage)
    gm = trace_model(model, SHAPE).graph_module
    order = stage["devices"][:1] + sorted(stage["devices"][1:])
    roles = split_roles(gm, inst, p.stages[0], {d: k for k, d in enumerate(order)})
    m = len(order)
    boxes = [Mailbox() for _ in range(m)]
    jobs: list[queue.Queue[Any]] = [queue.Queue() for _ in range(m)]
    log: list[tuple[int, int]] = []
    happened = [] if events is None else events

    def pace(k: int) -> Any:
        def record(request: int, *_: Any) -> None:
            happened.append((k, "compute"))
            if paced is not None:
                paced.append((k, request))
            if lead_spent is not None and k == 0:
                time.sleep(LEAD_PACE_S)
        return record

    members = [Member(gm, roles[d], EPOCH, LocalWire(boxes, jobs, k, log, happened),
                      pace(k))
               for k, d in enumerate(order)]

    def serve(k: int) -> None:
        while (job := jobs[k].get()) is not None:
            key, request = job
            with torch.no_grad():
                members[k].play(key[2], key[1], request)

    threads = [threading.Thread(target=serve, args=(k,), daemon=True) for k in range(1, m)]
    for t in threads:
        t.start()
    spec = split_plan(gm, inst, p)[0]
    current = [0]
    lead = lead_stage(build_stage(gm, spec), members[0], lambda: current[0])
    try:
        for request in range(requests):
            current[0] = request
            x = torch.randn(SHAPE)
            with torch.no_grad():
                torch.testing.assert_close(lead(x), model(x))
            if lead_spent is not None:
                lead_spent.append(members[0].spent_in_runs())
    finally:
        for q in jobs[1:]:
            q.put(None)
        for t in threads:
            t.join(10)
    return log, roles[order[0]], gm


SPLIT_CASES = {
    # uneven speeds 1 : 1/2 : 1/3: rows and channels cut unevenly; a change of scheme at every
    # split layer (re-tiling), grid 1 x 3 on three devices
    "mixed schemes, uneven shares": ([1e-3, 2e-3, 3e-3], ["d1", "d0", "d2"],
                                     {"conv1": "rows", "pool": "grid", "conv2": "outc",
                                      "fc": "outc"}),
    # d2 a thousand times slower: its rows and channels are empty slices
    "an empty slice": ([1e-3, 1e-3, 1.0], ["d0", "d1", "d2"],
                       {"conv1": "rows", "pool": "rows", "conv2": "outc", "fc": "outc"}),
    "grid 2 x 2": ([1e-3] * 4, ["d3", "d0", "d1", "d2"],
                   {"conv1": "grid", "pool": "grid", "conv2": "grid", "fc": "outc"}),
}


@pytest.mark.parametrize("reuse", [1, groups.MIN_BAND_REUSE], ids=["bands", "default"])
@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_runs_in_process_match_the_model_and_send_what_the_plan_says(
        case: str, reuse: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # with the floor on a band's weight reuse at 1 every conv slice that receives a halo is
    # computed in bands (these 16 x 16 layers are too small for bands by default)
    monkeypatch.setattr(groups, "MIN_BAND_REUSE", reuse)
    times, devices, schemes = SPLIT_CASES[case]
    data = chain_instance(len(times), times)
    stage = {"devices": devices, "mode": "split", "layers": LAYERS, "schemes": schemes}
    requests = 3
    paced: list[tuple[int, int]] = []
    log, role, gm = split_in_process(ChainNet(), data, stage, requests, paced)
    # conv1 .. relu2 chain into one run; the flatten ends it (it runs on the lead), fc alone
    assert role.runs == (("conv1", "pool", "conv2"), ("fc",))
    messages, elements = split_traffic(gm, role)
    assert len(log) == requests * messages
    assert sum(n for _, n in log) == requests * elements
    # every non-empty slice is paced once per band (at least once) per request, on its own
    # member (TinyNet's bands are counted by hand below)
    nonempty = sum(p.region.volume > 0 for member in role.parts for p in member)
    assert len(paced) >= requests * nonempty
    assert {request for _, request in paced} == set(range(requests))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Any) -> Any:
        return self.conv2(self.pool(self.relu(self.conv1(x))))


TINY_ROWS = {"devices": ["d0", "d1"], "mode": "split", "layers": ["conv1", "relu", "pool", "conv2"],
             "schemes": {"conv1": "rows", "pool": "rows", "conv2": "rows"}}
"""TinyNet's one split stage: its layers by rows over two devices."""


def test_a_run_moves_only_halos_counted_by_hand() -> None:
    # TinyNet on 3 x 16 x 16, two equal devices, rows everywhere. As one run:
    #   scatter: d1's conv1 rows [8, 16) read input rows [7, 16): 3 x 9 x 16 = 432 (1 message)
    #   into pool: pool rows [0, 4) / [4, 8) read conv1 rows [0, 8) / [8, 16): its own, 0
    #   into conv2: rows [0, 4) read pool rows [0, 5), rows [4, 8) read [3, 8): one 4 x 1 x 8
    #     halo row each way, 32 + 32 (2 messages)
    #   gather: d1's conv2 rows [4, 8): 4 x 4 x 8 = 128 (1 message)
    # 4 messages, 624 elements. Scattered and gathered per layer (the runtime before runs):
    #   conv1 432 + 4 x 8 x 16 = 512; pool 512 + 4 x 4 x 8 = 128; conv2 rows [3, 8) 4 x 5 x 8
    #   = 160 + 128: 6 messages, 1872 elements
    data, stage = chain_instance(2, model=TinyNet()), TINY_ROWS
    log, role, gm = split_in_process(TinyNet(), data, stage, requests=2)
    assert split_traffic(gm, role) == (4, 624)
    assert sorted(n for _, n in log) == sorted([432, 32, 32, 128] * 2)
    per_layer = replace(role, runs=tuple((node,) for run in role.runs for node in run))
    assert split_traffic(gm, per_layer) == (6, 1872)


@pytest.mark.parametrize("reuse", [1, groups.MIN_BAND_REUSE])
def test_a_member_computes_the_rows_that_need_no_halo_while_the_halo_travels(
        reuse: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # TinyNet on 3 x 16 x 16 over two equal devices by rows (the cuts of the hand count above).
    # conv2's rows [0, 4) (lead) read pool rows [0, 5): output row o reads [o - 1, o + 2), so
    # rows [0, 3) read only the lead's pool rows [0, 4) and row 3 reads the helper's row 4;
    # the helper's rows [4, 8) read [3, 8): rows [5, 8) need only its own, row 4 the lead's
    # row 3. conv1 and pool receive nothing but the scatter (one band each). So per request:
    #   lead:   start (scatter), conv1, pool, post row 3, conv2 rows [0, 3), take row 4,
    #           conv2 row 3, take the gather
    #   helper: take the scatter, conv1, pool, post row 4, conv2 rows [5, 8), take row 3,
    #           conv2 row 4, post the gather
    # That is with the floor on a band's weight reuse lowered to 1: by default (48) conv2's
    # one-row band of 8 positions is not worth a call of its own, so each member takes its
    # halo first and computes conv2 at once, as before overlapping
    monkeypatch.setattr(groups, "MIN_BAND_REUSE", reuse)
    data, stage = chain_instance(2, model=TinyNet()), TINY_ROWS
    events: list[tuple[int, str]] = []
    split_in_process(TinyNet(), data, stage, requests=2, events=events)
    if reuse == 1:
        lead = ["start", "compute", "compute", "post", "compute", "take", "compute", "take"]
        helper = ["take", "compute", "compute", "post", "compute", "take", "compute", "post"]
    else:
        lead = ["start", "compute", "compute", "post", "take", "compute", "take"]
        helper = ["take", "compute", "compute", "post", "take", "compute", "post"]
    assert [what for who, what in events if who == 0] == lead * 2
    assert [what for who, what in events if who == 1] == helper * 2


def test_a_grid_tile_computes_its_inside_first_and_sends_each_halo_after_its_last_band(
) -> None:
    # a 3 x 3 conv, padding 1, on 4 x 8 x 8, as a 2 x 2 grid of 4 x 4 tiles, fed and read by
    # the same grid; tile 0 (rows [0, 4), columns [0, 4)) reads rows and columns [0, 5) and
    # holds [0, 4) of both: output o reads [o - 1, o + 2), inside [0, 4) for o < 3, so its
    # inside is [0, 3) x [0, 3), then row 3 (all 4 columns), then column 3 (rows [0, 3)).
    # The next layer reads of tile 0: tile 1 (columns [4, 8)) its column 3, rows [0, 4): the
    # last of it (rows 0-2) is in band 2; tile 2 its row 3 and tile 3 its corner (3, 3), both
    # in band 1
    conv = nn.Conv2d(4, 2, 3, padding=1)
    spans = [(0, 4), (4, 8)]
    tiles = [Slice(conv, SlicePart("n", Scheme.GRID, Region((0, 2), h, w), (4, 8, 8),
                                   *window(conv))) for h in spans for w in spans]
    inputs = [Region((0, 4), t.part.region.h, t.part.region.w) for t in tiles]
    outputs = [t.part.region for t in tiles]
    into = groups.Exchange.of(inputs, [t.reads for t in tiles])
    out = groups.Exchange.of(outputs, [Region((0, 2), t.reads.h, t.reads.w) for t in tiles])
    order = groups.layer_order(tiles[0].part, 0, into, out, weighted=False)
    c = (0, 2)
    assert order.bands == (Region(c, (0, 3), (0, 3)), Region(c, (3, 4), (0, 4)),
                           Region(c, (0, 3), (3, 4)))
    assert order.early == 1
    assert order.posts == ((), ((2, Region(c, (3, 4), (0, 4))), (3, Region(c, (3, 4), (3, 4)))),
                           ((1, Region(c, (0, 4), (3, 4))),))
    # brute force: the bands, each computed as a slice of its own, glue into the conv's tile
    x = torch.randn(1, 4, 8, 8)
    bands = [Slice(conv, replace(tiles[0].part, region=band)) for band in order.bands]
    glued = paste(outputs[0], [(b.part.region, b(cut(x, Region((0, 4), (0, 8), (0, 8)), b.reads)))
                               for b in bands])
    torch.testing.assert_close(glued, conv(x)[:, :, :4, :4])
    # as a conv's (weighted) bands: the row band uses each weight 4 times, under
    # MIN_BAND_REUSE: the whole tile at once, after the halos
    whole = groups.layer_order(tiles[0].part, 0, into, out, weighted=True)
    assert whole.bands == (outputs[0],) and whole.early == 0


LEAD_PACE_S = 0.02


def test_the_lead_counts_the_wall_and_cpu_time_of_its_runs() -> None:
    # TinyNet's one run (conv1 with its ReLU, pool, conv2) by rows over two equal devices: the
    # lead computes 3 slices a request, one band each (conv2's border row is too narrow to be
    # a band of its own: the test above), each paced by a 20 ms sleep, so its runs take at
    # least 60 ms of wall time and, sleeping not being CPU time, over 55 ms more wall than CPU
    # time (the 16 x 16 slices take well under 5 ms); each call starts the count anew, so
    # every request's count is its own
    data, stage = chain_instance(2, model=TinyNet()), TINY_ROWS
    spent: list[tuple[float, float]] = []
    split_in_process(TinyNet(), data, stage, requests=2, lead_spent=spent)
    assert len(spent) == 2
    for wall_s, cpu_s in spent:
        assert 3 * LEAD_PACE_S <= wall_s < 3 * LEAD_PACE_S + 1.0
        assert wall_s - cpu_s > 3 * LEAD_PACE_S - 0.005


def test_a_run_moves_the_bytes_the_cost_model_charges() -> None:
    # the scatter and the exchanges between layers, against SplitGroup.entry and .into (the
    # gather is in the hand count above): mixed schemes over three unequal devices
    times, devices, schemes = SPLIT_CASES["mixed schemes, uneven shares"]
    inst = load_instance(chain_instance(len(times), times))
    st = plan({"devices": devices, "mode": "split", "layers": LAYERS, "schemes": schemes}
              ).stages[0]
    gm = trace_model(ChainNet(), SHAPE).graph_module
    role = split_roles(gm, inst, st, {d: k for k, d in enumerate(["d1", "d0", "d2"])})["d1"]
    run = groups.run_plan(gm, role.runs[0], [{p.node: p for p in m} for m in role.parts])
    group = SplitGroup(inst, split_order(inst, st))
    v = {lid: inst.model.index[lid] for lid in LAYERS}
    scheme = {lid: Scheme(s) for lid, s in schemes.items()}
    charged = [sum(group.entry(v["conv1"], scheme["conv1"], inst.model.input_bytes)[1]),
               sum(group.into(v["relu1"], v["conv1"], v["pool"], v["pool"], scheme["conv1"],
                              scheme["pool"])[1]),
               sum(group.into(v["pool"], v["pool"], v["conv2"], v["conv2"], scheme["pool"],
                              scheme["conv2"])[1])]
    moved = [4.0 * sum(r.volume for _, _, r in step.moves) for step in run.steps[:3]]
    assert moved == pytest.approx(charged, rel=1e-12)
    assert min(moved) > 0  # every exchange moves something here


SPLIT_THEN_SINGLE = ({"devices": ["d0", "d1"], "mode": "split", "layers": LAYERS[:3],
                      "schemes": {"conv1": "grid", "pool": "rows"}},
                     {"device": "d2", "layers": LAYERS[3:]})


def test_a_slowed_split_helper_slows_the_stage() -> None:
    # d1 (the helper) 2000 times slower from request 0: each of its two slices (conv1: its
    # input framed by the padding (a fill and a copy), conv and ReLU; the pool: at least the
    # max pool) then takes at least 2000 x its real compute,
    # and a torch op call takes over 3 us on any CPU, so the lead, which waits for d1's halo
    # and output, needs over 2000 x 5 x 3 us = 30 ms a request; unslowed, the stage took
    # 3.8 ms at the least on this loaded host
    report = run_plan(chain_instance(), plan(*SPLIT_THEN_SINGLE), requests=2, inflight=1,
                      slowdowns=(Slowdown("d1", 2000.0, 0),))
    assert report["stages"][0]["real_compute_min_s"] > 0.02


def test_a_split_helper_killed_mid_stream_loses_no_request() -> None:
    # --fail-stage 0 on a split stage kills its last helper (d1) after 3 requests: the lead's
    # wait for d1's pieces ends with the new deployment, the driver re-plans on d0, d2 and
    # every request is answered (once: answers are kept by request id)
    report = run_plan(chain_instance(), plan(*SPLIT_THEN_SINGLE), requests=10, inflight=3,
                      fail_stage=0, fail_after=3)
    assert report["failures"] == 1 and report["replans"] == 1
    assert report["failure_events"][0]["device"] == "d1"
    assert "d1" not in {d for st in report["final_plan"]["stages"]
                        for d in st.get("devices", [st.get("device")])}


def test_a_mailbox_wait_ends_with_the_pieces_a_failed_send_or_a_new_deployment() -> None:
    box = Mailbox()
    a, b = (EPOCH, 0, 0, 1, 1), (EPOCH, 0, 0, 1, 2)
    box.put(b, torch.ones(1))
    threading.Timer(0.05, box.put, (a, torch.zeros(1))).start()  # arrives while it waits
    assert [float(t) for t in box.take(EPOCH, [a, b], lambda: True)] == [0.0, 1.0]
    with pytest.raises(Obsolete):  # nothing comes, and the deployment is gone
        box.take(EPOCH, [a], lambda: False)
    box.fail(EPOCH, 3, "connection reset")
    with pytest.raises(PeerError, match="connection reset") as err:
        box.take(EPOCH, [a], lambda: True)
    assert err.value.rank == 3
    box.put(a, torch.zeros(1))
    box.forget(EPOCH + 1)  # the failure and the pieces of the older deployment are dropped
    assert box.take(EPOCH, [], lambda: True) == []
    with pytest.raises(Obsolete):
        box.take(EPOCH, [a], lambda: False)


# --- a split stage on a path inside a DAG: the convolutions of a residual block ----------------


class ResidualNet(nn.Module):
    """stem -> relu0 = a; a -> conv1 -> relu1 -> conv2 = b; relu2(b + a) -> pool -> fc. The
    layers conv1, relu1, conv2 are a path (each read only by the next), which may be one split
    stage; the skip ``a`` crosses that stage on its lead (relayed)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 128, 3, padding=1)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(128, 128, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(128, 128, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(128, 10)

    def forward(self, x: Any) -> Any:
        a = self.relu0(self.stem(x))
        b = self.conv2(self.relu1(self.conv1(a)))
        return self.fc(self.flat(self.pool(self.relu2(b + a))))


RESIDUAL = "test_runtime_groups:ResidualNet"
BLOCK = ["conv1", "relu1", "conv2"]


def residual_plan(schemes: dict[str, str]) -> Plan:
    """Stem on d0, the block's convolutions split over d1 (lead) and d2, the join on d3."""
    return plan({"device": "d0", "layers": ["stem", "relu0"]},
                {"devices": ["d1", "d2"], "mode": "split", "layers": BLOCK, "schemes": schemes},
                {"device": "d3", "layers": ["add", "relu2", "pool", "flat", "fc"]})


def test_a_split_stage_on_a_path_inside_a_residual_block_matches_the_model() -> None:
    # the skip tensor enters the split stage with conv1's input and leaves with conv2's output
    # (relay): the lead passes it through while conv1 (grid) and conv2 (outc, an all-gather
    # and a change of scheme between them) run split; every answer must equal the model's
    data = chain_instance(4, model=ResidualNet())
    p = residual_plan({"conv1": "grid", "conv2": "outc"})
    report = run(load_instance(data), p, RunOptions(RESIDUAL, requests=6, inflight=2))
    assert workers_of(os.getpid()) == []
    assert (report["completed"], report["mismatches"]) == (6, 0)
    assert report["stages"][1]["mode"] == "split"


def test_a_split_stage_under_stretch_takes_its_slowest_members_cpu_time_over_its_share(
        ) -> None:
    # The block (128 channels, 3 x 3: 151 M multiply-adds a convolution) on 32 x 32 split by
    # rows over d1 (1 CPU, the lead) and d2 (0.1 CPU), equal layer times so each computes half
    # the rows. conv1, relu1, conv2 take C of CPU time on one thread here; each member then
    # uses about C / 2, which the helper d2 stretches to (C / 2) / 0.1 = 5C, while the lead's
    # (C / 2) / 1 = C / 2 waits for it: the stage's emulated compute is about 5C (more by the
    # exchanges and the halo rows). Were the helper's slices not stretched, it would be about
    # C / 2 plus the exchanges (half a megabyte each way). Measured on the loaded 2-core host:
    # 7.7C (a slice's padding and its fused ReLU cost CPU too), 1.1C with d2 at 1 CPU, 2.0C at
    # 0.5 CPU. Generous: between 3C and 15C (a loaded host's CPU time per request varies).
    shape = (1, 3, 32, 32)
    model, x = ResidualNet(), torch.randn(shape)
    block = nn.Sequential(model.conv1, model.relu1, model.conv2)
    with torch.no_grad():
        a = model.relu0(model.stem(x))
    cpu_s = thread_cpu_s(lambda: block(a), repeats=6)
    data = chain_instance(4, model=ResidualNet(), shape=shape)
    for device, cpus in zip(data["devices"], [0.25, 1.0, 0.1, 0.25], strict=True):
        device["meta"] = {"cpus": cpus}
    report = run(load_instance(data), residual_plan({"conv1": "rows", "conv2": "rows"}),
                 RunOptions(RESIDUAL, requests=6, inflight=1, emulate=Mode.STRETCH,
                            time_scale=None))
    assert (report["completed"], report["mismatches"]) == (6, 0)
    split = report["stages"][1]
    assert 3 * cpu_s < split["compute_s"] < 15 * cpu_s, (split, cpu_s)
