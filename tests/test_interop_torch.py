"""Plans as torch.distributed.pipelining split specs: which boundaries are expressible, and the
spec really splits a model into the plan's stages with the same output."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from edgepart import InputError, load_instance
from edgepart.interop import torch_pipelining as tp
from edgepart.interop.cli import main
from edgepart.plan import Plan, Stage

# A diamond: y = a(x); out = c(act(b(y) + d(y))). fx order: x, a, b, d, add, act, c, output.
TINY_NET = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.a, self.b, self.d = nn.Linear(width, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.act, self.c = nn.ReLU(), nn.Linear(8, 4)

    def forward(self, x):
        y = self.a(x)
        return self.c(self.act(self.b(y) + self.d(y)))
'''
CALLS = (tp.FxCall("x", "placeholder", "x"), tp.FxCall("a", "call_module", "a"),
         tp.FxCall("b", "call_module", "b"), tp.FxCall("d", "call_module", "d"),
         tp.FxCall("add", "call_function", "add"), tp.FxCall("act", "call_module", "act"),
         tp.FxCall("c", "call_module", "c"), tp.FxCall("output", "output", "output"))
EDGES = (("a", "b"), ("a", "d"), ("b", "add"), ("d", "add"), ("add", "act"), ("act", "c"))


def instance(**nodes: list[str]) -> Any:
    ids = ["a", "b", "d", "add", "act", "c"]
    layers = [{"id": v, "op": v, "flops": 1e6, "param_bytes": 0, "output_bytes": 8,
               "nodes": nodes.get(v, [v])} for v in ids]
    return load_instance({"format_version": 1,
        "model": {"layers": layers, "edges": [{"src": s, "dst": d} for s, d in EDGES]},
        "devices": [{"id": f"dev{i}", "class": "cpu", "memory_bytes": 1e9, "flops_per_s": 1e9}
                    for i in range(3)],
        "links": {"default": {"bandwidth_bytes_per_s": 1e6, "latency_s": 0.0}}})


def plan(*stages: str) -> Plan:
    return Plan(tuple(Stage(f"dev{i}", tuple(s.split())) for i, s in enumerate(stages)))


def spec(*stages: str, calls: tuple[tp.FxCall, ...] = CALLS) -> dict[str, str]:
    return tp.torch_split(instance(), plan(*stages), calls).split_spec()


def test_boundary_at_a_module_splits_at_its_beginning() -> None:
    assert spec("a", "b d add", "act c") == {"b": "BEGINNING", "act": "BEGINNING"}


def test_boundary_before_a_function_splits_at_the_end_of_the_module_before_it() -> None:
    assert spec("a b d", "add act c") == {"d": "END"}


def test_single_stage_needs_no_split_point() -> None:
    split = tp.torch_split(instance(), plan("a b d add act c"), CALLS)
    assert split.split_spec() == {}
    assert "split_spec = {\n}" in split.to_code()


def test_interleaved_dag_stages_are_not_expressible() -> None:
    with pytest.raises(tp.NotExpressible, match=r"fx node 'd' .stage 0. runs after 'b' .stage 1."):
        spec("a d", "b add act c")


def test_boundary_between_two_functions_is_not_expressible() -> None:
    calls = (*CALLS[:4], tp.FxCall("add", "call_function", "add"),
             tp.FxCall("act", "call_function", "relu"), *CALLS[6:])
    with pytest.raises(tp.NotExpressible, match=r"between fx nodes 'add' .call_function add. "
                                                r"and 'act' .call_function relu."):
        spec("a b d add", "act c", calls=calls)


def test_a_module_called_twice_cannot_mark_a_boundary() -> None:
    calls = tuple(tp.FxCall(c.name, c.op, "shared" if c.name in ("b", "d") else c.target)
                  for c in CALLS)
    with pytest.raises(tp.NotExpressible, match="module shared called 2 times"):
        spec("a b d", "add act c", calls=calls)
    assert spec("a", "b d add act c", calls=calls) == {"a": "END"}


def test_code_and_json_forms() -> None:
    split = tp.torch_split(instance(), plan("a", "b d add", "act c"), CALLS)
    code = split.to_code()
    assert "'b': SplitPoint.BEGINNING,  # stage 1 (device dev1) starts here" in code
    assert "# stages: 0=dev0, 1=dev1, 2=dev2" in code
    compile(code, "<split>", "exec")
    assert json.loads(split.to_json()) == {"split_spec": {"b": "BEGINNING", "act": "BEGINNING"},
                                           "stages": ["dev0", "dev1", "dev2"]}


def test_mismatched_model_plan_or_instance_is_bad_input() -> None:
    with pytest.raises(InputError, match="has no fx node 'zz'"):
        tp.torch_split(instance(c=["zz"]), plan("a b d add act c"), CALLS)
    with pytest.raises(InputError, match="layer 'c' lists no fx nodes"):
        tp.torch_split(instance(c=[]), plan("a b d add act c"), CALLS)
    with pytest.raises(InputError, match=r"plan: .*goes backwards"):
        tp.torch_split(instance(), plan("b d add act c", "a"), CALLS)


# ---------------------------------------------------------------------------------------------
# With torch: the real model, split by torch.distributed.pipelining
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An importable module ``edgepart_tiny_net`` (model spec ``edgepart_tiny_net:Net``)."""
    pytest.importorskip("torch")
    (tmp_path / "edgepart_tiny_net.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("edgepart_tiny_net")


@pytest.mark.parametrize("stages", [("a", "b d add", "act c"), ("a b d", "add act c")])
def test_split_spec_gives_the_plans_stages_and_the_same_output(tiny_net: Any,
                                                               stages: tuple[str, ...]) -> None:
    import torch
    from torch.distributed.pipelining import SplitPoint, pipeline

    model = tiny_net.Net().eval()
    calls = tp.fx_calls(model)
    assert [c.name for c in calls] == [c.name for c in CALLS]
    split = tp.torch_split(instance(), plan(*stages), calls)
    x = torch.randn(2, 8)
    pipe = pipeline(model, mb_args=(x,), split_spec={k: SplitPoint[v] for k, v in
                                                     split.split_spec().items()})
    assert pipe.num_stages == len(stages)
    for i, stage in enumerate(stages):
        graph: torch.fx.Graph = pipe.get_stage_module(i).graph  # type: ignore[assignment]
        modules = {str(n.target) for n in graph.nodes if n.op == "call_module"}
        assert modules == set(stage.split()) - {"add"}
    with torch.no_grad():
        torch.testing.assert_close(pipe(x)[0], model(x))


def test_cli_reads_the_model_spec_from_the_profiled_instance(
        tiny_net: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgepart.profiling.clusters import load_cluster
    from edgepart.profiling.profile import ProfileOptions, profile_instance

    cluster = load_cluster({"devices": [{"class": "rpi4", "count": 3}],
                            "generator": {"kind": "ethernet"}})
    data = profile_instance("edgepart_tiny_net:Net", cluster,
                            ProfileOptions(input_shape=(1, 8), time_model="roofline",
                                           model_kwargs={"width": 8}))
    inst_path = tmp_path / "inst.json"
    inst_path.write_text(json.dumps(data))
    inst = load_instance(inst_path)
    devices = [d.id for d in inst.devices]
    for name, stages, code in (("ok", ("a b d", "add act c"), 0),
                               ("dag", ("a d", "b add act c"), 1)):
        path = tmp_path / f"{name}.json"
        Plan(tuple(Stage(devices[i], tuple(s.split())) for i, s in enumerate(stages))
             ).save(path)
        assert main(["export-plan", "torch", str(path), "--instance", str(inst_path)]) == code
    out = capsys.readouterr()
    assert "'d': SplitPoint.END,  # stage 0 (device rpi4-0) ends here" in out.out
    assert out.err.startswith("edgepart: not expressible as split points: fx node 'd'")
    assert main(["export-plan", "torch", str(tmp_path / "ok.json"), "--instance",
                 str(inst_path), "--model", "edgepart_tiny_net:Nope"]) == 2
    assert "has no callable 'Nope'" in capsys.readouterr().err
