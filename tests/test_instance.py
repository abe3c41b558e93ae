"""Loading and validation: every class of bad input gets a precise message with its JSON path."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from edgepart import InputError, load_instance


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InputError) as err:
        load_instance(data)
    return err.value.problems


def test_valid_instance_loads_with_derived_data(two_layers: dict[str, Any]) -> None:
    inst = load_instance(two_layers)
    assert inst.times == ((1.0, 1.0), (1.0, 1.0))
    assert inst.model.tensor_bytes == (1e8, 1e8)
    assert inst.model.entries == (0,) and inst.model.exits == (1,)
    assert inst.model.is_chain
    assert inst.transfer_time(0, 1, 1e8) == pytest.approx(0.1)
    assert inst.transfer_time(1, 1, 1e8) == 0.0


def test_negative_number_names_its_path(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][1]["param_bytes"] = -4
    assert problems(two_layers) == ["model.layers[1].param_bytes: must be >= 0, got -4"]


def test_non_finite_and_non_numbers(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][0]["flops"] = math.inf
    two_layers["devices"][0]["memory_bytes"] = "lots"
    assert problems(two_layers) == ["model.layers[0].flops: must be finite, got inf",
                                    'devices[0].memory_bytes: must be a number, got "lots"']


def test_every_problem_is_reported_at_once(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][0]["flops"] = -1
    two_layers["devices"][1]["memory_bytes"] = 0
    two_layers["links"]["default"]["bandwidth_bytes_per_s"] = 0
    assert problems(two_layers) == [
        "model.layers[0].flops: must be >= 0, got -1",
        "devices[1].memory_bytes: must be > 0, got 0",
        "links.default.bandwidth_bytes_per_s: must be > 0, got 0"]


def test_unknown_and_duplicate_ids(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["edges"].append({"src": "a", "dst": "zz"})
    two_layers["devices"][1]["id"] = "d0"
    two_layers["source"] = "nowhere"
    assert problems(two_layers) == [
        "model.edges[1].dst: unknown layer id 'zz'",
        "devices[1].id: duplicate id 'd0' (also devices[0])",
        'source: unknown device id "nowhere"']


def test_duplicate_layer_id(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][1]["id"] = "a"
    assert "model.layers[1].id: duplicate id 'a' (also model.layers[0])" in problems(two_layers)


def test_cycle_or_backward_edge(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["edges"].append({"src": "b", "dst": "a"})
    assert problems(two_layers) == [
        "model.edges[1]: edge b -> a goes against the layer order (a cycle?): layers must be "
        "listed in topological order"]


def test_disconnected_layer(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"].append(dict(two_layers["model"]["layers"][0], id="lonely"))
    assert problems(two_layers) == [
        "model.layers[2]: layer 'lonely' is not connected to layer 'a'"]


def test_device_class_without_time(two_layers: dict[str, Any]) -> None:
    del two_layers["devices"][1]["flops_per_s"]
    two_layers["devices"][1]["class"] = "npu"
    assert problems(two_layers) == [
        "devices[1].class: no time for layer 'a' on class 'npu' (give "
        "model.layers[0].time_s.npu or devices[1].flops_per_s)"]


def test_measured_time_beats_flops(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][0]["time_s"] = {"cpu": 0.25}
    assert load_instance(two_layers).times[0] == (0.25, 0.25)


def test_edges_of_one_tensor_must_agree(two_layers: dict[str, Any]) -> None:
    layer = dict(two_layers["model"]["layers"][1], id="c")
    two_layers["model"]["layers"].append(layer)
    two_layers["model"]["edges"] = [{"src": "a", "dst": "b", "bytes": 100},
                                    {"src": "a", "dst": "c", "bytes": 200}]
    assert problems(two_layers) == [
        "model.edges[1].bytes: out-edges of layer 'a' must carry one tensor size, got 100 "
        "(model.edges[0]) and 200"]


def test_unknown_fields_and_bad_options(two_layers: dict[str, Any]) -> None:
    two_layers["devices"][0]["speed"] = 3
    two_layers["cost_model"] = {"transfer": "teleport", "overlap": "yes"}
    assert problems(two_layers) == [
        "devices[0].speed: unknown field",
        'cost_model.overlap: must be true or false, got "yes"',
        "cost_model.transfer: must be 'relay' or 'direct', got \"teleport\""]


def test_link_matrix_and_directed_pairs(two_layers: dict[str, Any]) -> None:
    two_layers["links"] = {
        "matrix": {"bandwidth_bytes_per_s": [[0, 1e6], [2e6, 0]],
                   "latency_s": [[0, 0.1], [0.2, 0]]},
        "pairs": [{"src": "d0", "dst": "d1", "bandwidth_bytes_per_s": 4e6, "latency_s": 0}]}
    inst = load_instance(two_layers)
    assert inst.transfer_time(0, 1, 4e6) == pytest.approx(1.0)
    assert inst.transfer_time(1, 0, 4e6) == pytest.approx(2.2)
    two_layers["links"]["matrix"]["latency_s"] = [[0, 1]]
    assert problems(two_layers) == [
        "links.matrix.latency_s: must be a 2 x 2 array (one row and column per device, "
        "in the order of 'devices')"]


def test_layer_allowed_nowhere(two_layers: dict[str, Any]) -> None:
    two_layers["model"]["layers"][0]["device_classes"] = ["gpu"]
    assert problems(two_layers) == [
        "model.layers[0].device_classes: layer 'a' may run on no device of the cluster"]


def test_file_errors(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON \(.* at line 1\)"):
        load_instance(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_instance(tmp_path / "missing.json")


def test_round_trip_through_json(two_layers: dict[str, Any]) -> None:
    two_layers["source"] = "d1"
    inst = load_instance(two_layers)
    again = load_instance(json.loads(json.dumps(inst.to_dict())))
    assert again.times == inst.times and again.links == inst.links
    assert again.source == "d1" and again.model.edges == inst.model.edges


def test_without_devices_drops_device_and_endpoint(two_layers: dict[str, Any]) -> None:
    two_layers["source"] = "d1"
    inst = load_instance(two_layers).without_devices({"d1"})
    assert [d.id for d in inst.devices] == ["d0"] and inst.source is None
