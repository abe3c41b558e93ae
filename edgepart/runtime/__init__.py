"""Runtime: execute a plan on workers connected by torch RPC, emulate the cluster, survive faults.

``edgepart run INSTANCE PLAN.json --model SPEC`` (see ``docs/runtime.md``):

* :mod:`~edgepart.runtime.split` cuts the traced model into stage modules at the plan's cuts;
* :mod:`~edgepart.runtime.transport` is the small call interface, torch RPC behind it;
* :mod:`~edgepart.runtime.worker` runs one device's stage; :mod:`~edgepart.runtime.cluster`
  starts the workers and watches them;
* :mod:`~edgepart.runtime.emulate` pads compute, sets cgroup limits and delays messages;
* :mod:`~edgepart.runtime.prepare` checks everything before any process starts;
* :mod:`~edgepart.runtime.driver` streams the requests, re-plans after a failure
  (:mod:`~edgepart.runtime.replan`) or a slowdown, and :mod:`~edgepart.runtime.report` compares
  what it measured with the cost model's prediction.

Nothing here is imported by the core package: torch is needed only to run.
"""

from __future__ import annotations
