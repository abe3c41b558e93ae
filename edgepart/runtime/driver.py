"""The driver: deploys a plan on the workers, streams requests, survives faults, adapts.

:func:`run` checks everything (:mod:`~edgepart.runtime.prepare`), starts one worker per device
(:class:`~edgepart.runtime.cluster.Cluster`), deploys the plan and streams ``requests`` requests
with at most ``inflight`` unanswered at any time (by default enough to fill the pipeline:
2 x predicted latency / period + 1). Each answer is compared with the unsplit model's
output (``torch.testing.assert_close`` tolerances); an answer that differs counts in
``mismatches``.

Every deployment has an *epoch*. When a worker dies or hangs (an RPC error, a missed heartbeat
or, for a local worker, its process exiting), the driver drops that device from the instance,
deploys a quick heuristic plan on the devices left (:func:`~edgepart.runtime.replan.quick_plan`,
milliseconds) as a new epoch (workers drop older messages) and re-sends every request not yet
answered; meanwhile the exact re-plan (:func:`~edgepart.runtime.replan.exact_plan`) runs in a
background thread, and when it ends with a better plan the driver deploys it in the same way (a
new epoch, every unanswered request re-sent) as soon as the quick plan has given its first
answer. Answers are kept by request id, so each request is answered exactly once, even when a
re-sent copy and an old one both arrive.

Device groups (:mod:`~edgepart.runtime.groups`): every replica of a replicated stage gets the
stage; when a request is sent, the stage's scheduler deals it to a replica (its route). A dead
replica whose stage keeps others is dropped without a re-plan or a new epoch: the requests dealt
to it are dealt again to the others. A split stage's lead and helpers each get their slices and
the stage's runs (:func:`~edgepart.runtime.groups.split_roles`); a helper gets its device's
``--slowdown`` (each of its slices is slowed), and ``--fail-stage`` of a split stage kills its
last helper (the lead's death is a single stage's, already covered), after which the driver
re-plans as for any lost stage device.

With ``adapt``, each answer's per-stage compute times are compared with what the instance
predicts for that device; when a device runs slower than its profile by more than
:data:`ADAPT_THRESHOLD` (median over :data:`ADAPT_WINDOW` requests), its speed is updated in the
instance, a new plan is made, and it is deployed (after draining the pipeline) when the predicted
gain over the remaining requests outweighs the switch (a redeploy plus one pipeline latency).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import queue
import signal
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edgepart.cost import Metrics, evaluate, member_compute_s, validate_plan
from edgepart.instance import Instance, Link
from edgepart.plan import Mode, Plan
from edgepart.profiling.model_spec import first_line
from edgepart.runtime import events, worker
from edgepart.runtime.cluster import Cluster, WorkerError
from edgepart.runtime.emulate import Emulation, LinkClock, stage_cpus
from edgepart.runtime.groups import ReplicaScheduler, drop_replicas, ends, split_roles
from edgepart.runtime.prepare import Prepared, RunOptions, prepare, stage_seconds
from edgepart.runtime.replan import exact_plan, quick_plan, replan, slowed, warm_up_solvers
from edgepart.runtime.report import build_report, rate
from edgepart.runtime.split import StageSpec, fingerprint, split_plan
from edgepart.runtime.timeline import Interval, SourceSend, measured_intervals, save_timeline
from edgepart.runtime.transport import Transport, call_while, disconnects_unlogged

__all__ = ["ADAPT_THRESHOLD", "ADAPT_WINDOW", "Deployment", "run"]

ADAPT_WINDOW = 5
QUOTA_WINDOW = 5
WARMUP = -1
"""The id of the untimed request sent through a fresh deployment first (it opens every
connection between stages, so the measured stream starts warm)."""
ADAPT_THRESHOLD = 0.3


@dataclass
class Deployment:
    epoch: int
    reason: str
    plan: Plan
    metrics: Metrics  # predicted, on the instance as believed then
    deploy_s: float = 0.0


def run(inst: Instance, plan: Plan, options: RunOptions) -> dict[str, Any]:
    """Run ``plan`` and return the report (see ``docs/runtime.md``)."""
    prep = prepare(inst, plan, options)
    _drain_inbox()
    cluster = Cluster(inst, options.master, startup_timeout_s=options.startup_timeout_s,
                      heartbeat_timeout_s=options.heartbeat_timeout_s)
    with _terminate_as_exit(), disconnects_unlogged():
        try:
            cluster.start(_cgroup_limits(prep))
            setup = worker.WorkerSetup(options.model, options.seed, options.weights,
                                       prep.input_shape)
            cluster.setup(dict.fromkeys(cluster.devices, setup), fingerprint(prep.gm))
            stream = _Stream(prep, cluster)
            stream.run()
            report = build_report(prep, stream)
            if options.timeline is not None:
                drawn = stream.draw_timeline(options.timeline)
                report["timeline"] = {"path": options.timeline, "intervals": len(drawn),
                                      "requests": sorted({iv.request for iv in drawn})}
            return report
        finally:
            cluster.close()


def _cgroup_limits(prep: Prepared) -> dict[str, tuple[float | None, float | None]] | None:
    """Each device's cgroup (CPUs, memory bytes; None: no limit), or None for no cgroups.
    ``cgroup``: its quota (devices without a stage: the least) and memory; ``stretch`` (where
    cgroups can be made): no limit, only the top CPU weight of the parent cgroup."""
    devices = prep.inst.devices
    if prep.cgroup_cpus is not None:
        spare = min(prep.cgroup_cpus.values())
        return {d.id: (prep.cgroup_cpus.get(d.id, spare), d.memory_bytes) for d in devices}
    if prep.weight_cgroups:
        return {d.id: (None, None) for d in devices}
    return None


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the workers and cgroups are always cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _drain_inbox() -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            events.INBOX.get_nowait()


def _link(inst: Instance, src: str | None, dst: str | None) -> Link | None:
    """The link a message from ``src`` to ``dst`` takes (None: no message, or same device)."""
    if src is None or dst is None or src == dst:
        return None
    return inst.link(inst.device_index[src], inst.device_index[dst])


class _Source(threading.Thread):
    """Sends request inputs to the first stage, one at a time over the source link."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.queue: queue.Queue[tuple[int, int, torch.Tensor, tuple[int, ...]] | None] = (
            queue.Queue())
        self.route: tuple[int, dict[int, Link | None], Emulation] = (-1, {}, Emulation())
        self.link = LinkClock()
        self.log: list[SourceSend] = []

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            epoch, request, x, route = item
            current, links, emulation = self.route
            if epoch != current:
                continue
            rank = route[0]
            wait = emulation.link_wait(links.get(rank), x.numel() * x.element_size())
            taken = time.perf_counter()
            self.link.hold(wait)
            t0 = time.perf_counter()
            try:
                if call_while(self.transport, functools.partial(self.routes, epoch), rank,
                              worker.submit, epoch, request, (x,), (), route):
                    self.log.append((epoch, request, taken, time.perf_counter()))
            except Exception as err:  # backend-specific: the first stage is gone
                events.INBOX.put(events.Fault(epoch, 0, rank, first_line(err)))
            self.link.sent(wait, time.perf_counter() - t0)

    def routes(self, epoch: int) -> bool:
        """True while deployment ``epoch`` is the one requests go to."""
        return self.route[0] == epoch


class _Quotas:
    """cgroup mode: each device's CPU quota, corrected online.

    The quota from a stage's time measured before the run is what the device needs on a quiet
    host; on a shared one (another tenant, a busy hyperthread sibling) a thread gets less done
    per CPU-second. Every :data:`QUOTA_WINDOW` answers, a device whose median real compute time is
    more than 5% off its predicted compute time gets its quota scaled by that ratio (at most x2
    or /2 a step, never over one CPU: a worker computes on one thread). Devices whose ``meta``
    sets ``cpus`` keep it. Injected slowdowns are not seen: they come after the real compute.
    """

    def __init__(self, cluster: Cluster, inst: Instance, cpus: dict[str, float]) -> None:
        self.cluster = cluster
        self.cpus = dict(cpus)
        self.fixed = {d.id for d in inst.devices if "cpus" in d.meta}
        self.samples: dict[str, list[float]] = {}

    def set(self, cpus: dict[str, float]) -> None:
        for device, quota in cpus.items():
            self.cpus[device] = quota
            self.cluster.set_cpus(self.cluster.ranks[device], quota)
        self.samples.clear()

    def observe(self, hops: tuple[events.Hop, ...], predicted: Metrics) -> None:
        expected = {st.device: st.compute_s for st in predicted.stages}
        for device, _, real_s in hops:
            if device in self.fixed or not expected.get(device):
                continue
            window = self.samples.setdefault(device, [])
            window.append(real_s / expected[device])
            if len(window) == QUOTA_WINDOW:
                ratio = min(2.0, max(0.5, statistics.median(window)))
                window.clear()
                if abs(ratio - 1) > 0.05:
                    self.cpus[device] = min(1.0, self.cpus[device] * ratio)
                    self.cluster.set_cpus(self.cluster.ranks[device], self.cpus[device])


class _Stream:
    """The request loop and everything that changes the deployment while it runs."""

    def __init__(self, prep: Prepared, cluster: Cluster) -> None:
        self.prep, self.cluster, self.options = prep, cluster, prep.options
        self.truth = prep.inst  # devices as they are (emulation targets)
        self.belief = prep.inst  # devices as the driver believes them (planning)
        self.plan = prep.plan
        self.deployments: list[Deployment] = []
        self.sent: dict[int, float] = {}  # request -> first send time
        self.pending: set[int] = set()
        self.done: dict[int, float] = {}
        self.mismatches = 0
        self.duplicates = 0
        self.next = 0
        self.warm = False
        self.failures: list[dict[str, Any]] = []
        self.recovering: tuple[float, int] | None = None  # (noticed, first epoch after it)
        self.exact: tuple[Plan, dict[str, Any]] | None = None  # proven, waiting for recovery
        self.adaptations: list[dict[str, Any]] = []
        self.switch_to: Plan | None = None
        self.samples: dict[str, collections.deque[float]] = {}
        self.baseline: dict[str, float] = {}
        self.source = _Source(cluster.transport)
        self.slowdowns = {s.device: (s.factor, s.request) for s in self.options.slowdowns}
        self.quotas = (_Quotas(cluster, prep.inst, prep.cgroup_cpus)
                       if prep.cgroup_cpus is not None else None)
        self.targets = evaluate(prep.inst, prep.plan)  # predicted on the devices as they are
        self.schedulers: dict[int, ReplicaScheduler] = {}  # replicated stage -> its scheduler
        self.routes: dict[int, tuple[int, ...]] = {}  # request -> the ranks it is dealt to
        self.served: collections.Counter[str] = collections.Counter()  # device -> answers
        self.out_of_order = 0  # answers that arrived after a later request's

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        warm_up_solvers()
        self.source.start()
        try:
            failed = self.deploy(self.plan, "initial")
            if failed:
                self.lose(failed, "lost while deploying")
            self.send(WARMUP)
            self.loop()
        finally:
            self.source.queue.put(None)

    def loop(self) -> None:
        stall_s = max(60.0, 20 * self.deployments[0].metrics.latency_s
                      * self.prep.emulation.time_scale)
        last = time.monotonic()
        while len(self.done) < self.options.requests:
            self.fill()
            try:
                event = events.INBOX.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() - last > stall_s:
                    raise WorkerError(f"no answer for {stall_s:.0f} s; "
                                      f"{len(self.pending)} requests unanswered") from None
                continue
            last = time.monotonic()
            if isinstance(event, events.Result):
                self.on_result(event)
            elif isinstance(event, events.Proven):
                self.on_proven(event)
            else:
                self.on_fault(event)

    def fill(self) -> None:
        while (self.warm and self.switch_to is None and len(self.pending) < self.prep.inflight
               and self.next < self.options.requests):
            self.send(self.next)
            self.next += 1

    def send(self, request: int) -> None:
        self.sent.setdefault(request, time.perf_counter())
        self.pending.add(request)
        x = self.prep.inputs[request % len(self.prep.inputs)]
        self.source.queue.put((self.cluster.epoch, request, x, self.deal(request)))

    def deal(self, request: int) -> tuple[int, ...]:
        """The rank of every stage's end for ``request``: each replicated stage's scheduler
        picks a replica (:mod:`~edgepart.runtime.groups`)."""
        self.release(request)
        route = tuple(self.schedulers[b].pick() if b in self.schedulers
                      else self.cluster.ranks[st.device] for b, st in enumerate(self.plan.stages))
        self.routes[request] = route
        return route

    def release(self, request: int, hops: tuple[events.Hop, ...] = ()) -> None:
        """``request`` left the replicas it was dealt to (answered, or dealt again); with its
        ``hops``, each replica's measured compute updates its scheduler."""
        route = self.routes.pop(request, None)
        if route is None:
            return
        compute = {device: real_s for device, _, real_s in hops}
        for b, scheduler in self.schedulers.items():
            scheduler.release(route[b])
            device = self.cluster.devices.get(route[b])
            if device in compute:
                scheduler.observe(route[b], compute[device])

    def on_result(self, ev: events.Result) -> None:
        if ev.request == WARMUP:
            self.warm = True
            self.pending.discard(WARMUP)
            self.release(WARMUP)
            return
        if ev.request in self.done:
            self.duplicates += 1
            return
        self.out_of_order += ev.request < max(self.done, default=-1)
        self.done[ev.request] = ev.received
        self.pending.discard(ev.request)
        self.release(ev.request, ev.hops)
        self.served.update(device for device, _, _ in ev.hops)
        reference = self.prep.references[ev.request % len(self.prep.references)]
        try:
            torch.testing.assert_close(ev.output, reference)
        except (AssertionError, TypeError, ValueError):
            self.mismatches += 1
        if self.recovering is not None and ev.epoch >= self.recovering[1]:
            self.failures[-1]["recovery_s"] = ev.received - self.recovering[0]
            self.recovering = None
            if self.exact is not None:
                self.switch_to_exact(*self.exact)
        if ev.epoch == self.cluster.epoch:
            if self.quotas is not None:
                self.quotas.observe(ev.hops, self.targets)
            if self.options.adapt:
                self.observe(ev.hops)
        if self.switch_to is not None and not self.pending:
            self.switch(self.switch_to)

    # --- deployments ---------------------------------------------------------------------------

    def deploy(self, plan: Plan, reason: str) -> set[int]:
        """Deploy ``plan`` as a new epoch; returns the ranks that died meanwhile."""
        t0 = time.perf_counter()
        epoch = self.cluster.epoch + 1
        specs = split_plan(self.prep.gm, self.truth, plan)
        self.targets = evaluate(self.truth, plan)
        configs = self.configs(plan, specs, epoch, first=not self.deployments)
        if self.quotas is not None and self.deployments:
            host = stage_seconds(self.prep.gm, specs, self.prep.inputs[0])
            self.quotas.set(stage_cpus(self.truth, plan, host, self.prep.emulation.time_scale))
        self.cluster.epoch = epoch
        failed = self.cluster.deploy(configs)
        self.plan = plan
        self.routes.clear()
        self.schedulers = {b: ReplicaScheduler({
            self.cluster.ranks[d]: member_compute_s(self.truth, st.layers, d) for d in st.members})
                           for b, st in enumerate(plan.stages) if st.mode is Mode.REPLICATE}
        links = {self.cluster.ranks[d]: _link(self.truth, self.truth.source, d)
                 for d in ends(plan.stages[0])}
        self.source.route = (epoch, links, self.prep.emulation)
        self.deployments.append(Deployment(epoch, reason, plan, evaluate(self.belief, plan),
                                           time.perf_counter() - t0))
        self.reset_adaptation()
        return failed

    def configs(self, plan: Plan, specs: Sequence[StageSpec], epoch: int,
                first: bool) -> dict[int, worker.StageConfig | None]:
        """What every worker runs in deployment ``epoch`` (None: no stage): a stage's device,
        every replica of a replicated stage (each padded to its own compute), a split stage's
        lead and its helpers (the lead padded to the group's compute, each helper slowed by
        its own ``--slowdown``). ``--fail-stage`` goes to the stage's device, or a split stage's
        last helper."""
        out: dict[int, worker.StageConfig | None] = dict.fromkeys(self.cluster.devices)
        for b, (st, spec) in enumerate(zip(plan.stages, specs, strict=True)):
            nxt = ends(plan.stages[b + 1]) if b + 1 < len(plan.stages) else (None,)
            roles = (split_roles(self.prep.gm, self.truth, st, self.cluster.ranks)
                     if st.mode is Mode.SPLIT else {})
            doomed = list(roles)[-1] if roles else st.device
            fail = self.options.fail_after if first and b == self.options.fail_stage else None
            for here in ends(st):
                compute = (member_compute_s(self.truth, st.layers, here)
                           if st.mode is Mode.REPLICATE else self.targets.stages[b].compute_s)
                links = tuple((0 if d is None else self.cluster.ranks[d],
                               _link(self.truth, here, self.truth.sink if d is None else d))
                              for d in nxt)
                out[self.cluster.ranks[here]] = worker.StageConfig(
                    epoch, here, spec, links, self.prep.emulation,
                    self.prep.emulation.pad_target(compute), self.slowdowns.get(here),
                    fail if here == doomed else None, self.options.fail_hang, roles.get(here))
            for device, role in roles.items():
                if not role.lead:
                    out[self.cluster.ranks[device]] = worker.StageConfig(
                        epoch, device, spec, (), self.prep.emulation,
                        slowdown=self.slowdowns.get(device),
                        fail_after=fail if device == doomed else None,
                        fail_hang=self.options.fail_hang, split=role)
        return out

    # --- faults --------------------------------------------------------------------------------

    def on_fault(self, ev: events.Fault) -> None:
        rank = ev.peer
        if rank in self.cluster.dead or (ev.epoch < self.cluster.epoch and ev.rank != 0):
            return
        if rank == 0 or (ev.rank != 0 and self.cluster.responsive(rank)):
            raise WorkerError(f"device '{self.cluster.devices.get(ev.rank, 'driver')}' could not "
                              f"send to rank {rank}: {ev.message}")
        self.lose({rank}, ev.message, ev.noticed)

    def lose(self, ranks: set[int], message: str, noticed: float | None = None) -> None:
        """Drop the devices of dead (or hung) ``ranks``; if they ran a stage, deploy a quick plan
        on the devices left at once, re-send what is unanswered, and solve exactly meanwhile."""
        noticed = noticed or time.perf_counter()
        self.cluster.bury(ranks)
        redeployed = False
        while ranks:
            gone = {self.cluster.devices[r] for r in ranks}
            self.failures += [{"device": d, "requests_answered": len(self.done),
                               "message": message, "noticed": noticed, "recovery_s": None}
                              for d in sorted(gone)]
            self.truth = self.truth.without_devices(gone)
            self.belief = self.belief.without_devices(gone)
            ranks = set()
            if self.drop_replicas(gone, noticed):
                return
            if gone & {d for st in self.plan.stages for d in st.members}:
                self.switch_to = self.exact = None
                t1 = time.perf_counter()
                result, plan = quick_plan(self.belief, self.options.replan_time_limit_s)
                self.failures[-1].update(replan_s=time.perf_counter() - t1,
                                         replan_method=result.method,
                                         replan_period_s=result.objective_s)
                ranks = self.deploy(plan, "failure of " + ", ".join(sorted(gone)))
                self.failures[-1]["deploy_s"] = self.deployments[-1].deploy_s
                redeployed = True
                self.cluster.bury(ranks)
        if not redeployed:
            return
        self.solve_exactly(len(self.failures) - 1)
        self.resend_pending()
        if self.pending:
            self.recovering = (noticed, self.cluster.epoch)
        else:
            self.failures[-1]["recovery_s"] = time.perf_counter() - noticed

    def drop_replicas(self, gone: set[str], noticed: float) -> bool:
        """When ``gone`` are only replicas of replicated stages that keep others, the others
        take their share: no re-plan, no new epoch; the requests dealt to them are dealt again.
        False when a re-plan is needed (or ``gone`` ran nothing)."""
        plan = drop_replicas(self.plan, gone)
        if plan is None or plan == self.plan:
            return False
        dead = {self.cluster.ranks[d] for d in gone}
        for scheduler in self.schedulers.values():
            for rank in dead:
                scheduler.drop(rank)
        self.plan, self.targets = plan, evaluate(self.truth, plan)
        self.failures[-1].update(replan_s=0.0, replan_method="none: the other replicas take "
                                 "its share", replan_period_s=self.targets.bottleneck_s)
        lost = [r for r in sorted(self.pending) if dead & set(self.routes.get(r, ()))]
        for request in lost:
            self.send(request)
        if lost:
            self.recovering = (noticed, self.cluster.epoch)
        else:
            self.failures[-1]["recovery_s"] = 0.0
        return True

    def resend_pending(self) -> None:
        """Send every unanswered request again, to the deployment just made."""
        for request in sorted(self.pending):
            self.send(request)

    def solve_exactly(self, failure: int) -> None:
        """Run the exact re-plan on the devices left in a background thread; it posts a
        :class:`~edgepart.runtime.events.Proven` when it ends."""
        belief, limit = self.belief, self.options.replan_time_limit_s

        def solve() -> None:
            events.INBOX.put(events.Proven(self, failure, exact_plan(belief, limit)))

        threading.Thread(target=solve, name="edgepart-exact-replan", daemon=True).start()

    def on_proven(self, ev: events.Proven) -> None:
        """Take the exact re-plan when it is valid on the devices left and predicts a shorter
        period than the plan deployed (both evaluated on the driver's current belief).

        It is deployed once the quick plan has given its first answer (at once if it has):
        redeploying earlier would restart the pipeline and push the first answer after the
        failure back by the re-plan's redeploy and pipeline latency. An adaptation waiting to
        switch goes first.
        """
        if ev.owner is not self:  # left over from an earlier run in this process
            return
        result, record = ev.result, self.failures[ev.failure]
        record["exact"] = {"method": result.method, "status": result.status.value,
                           "period_s": result.objective_s, "bound_s": result.bound_s,
                           "solve_s": result.wall_time_s, "switched": False}
        plan = result.plan
        if plan is None or validate_plan(self.belief, plan) or self.switch_to is not None:
            return
        if not (evaluate(self.belief, plan).bottleneck_s
                < evaluate(self.belief, self.plan).bottleneck_s * (1 - 1e-9)):
            return
        self.exact = (plan, record)
        if self.recovering is None:
            self.switch_to_exact(plan, record)

    def switch_to_exact(self, plan: Plan, record: dict[str, Any]) -> None:
        """Deploy the exact re-plan now and re-send what is unanswered (as after a failure:
        waiting for the quick plan's pipeline to drain would keep the worse plan serving for
        ``inflight`` of its periods)."""
        self.exact = None
        record["exact"]["switched"] = True
        failed = self.deploy(plan, f"exact re-plan after failure of {record['device']}")
        record["exact_switch_s"] = time.perf_counter() - record["noticed"]
        if failed:
            self.lose(failed, "lost while deploying")
        else:
            self.resend_pending()

    # --- the picture ----------------------------------------------------------------------------

    def draw_timeline(self, path: str) -> list[Interval]:
        """Draw the last deployment's measured intervals against its predicted schedule in a
        PNG at ``path`` (:mod:`~edgepart.runtime.timeline`); returns the intervals drawn."""
        epoch = self.deployments[-1].epoch
        devices = [st.device for st in self.plan.stages]
        records = [self.cluster.records(self.cluster.ranks[d], epoch) for d in devices]
        intervals = measured_intervals(devices, records, self.source.log, epoch,
                                       self.prep.emulation.time_scale)
        return save_timeline(path, self.truth, self.plan, intervals)

    # --- adaptation ----------------------------------------------------------------------------

    def reset_adaptation(self) -> None:
        for d in self.samples.values():
            d.clear()

    def observe(self, hops: tuple[events.Hop, ...]) -> None:
        """Track measured / predicted compute per device; adapt on a sustained slowdown."""
        metrics = self.deployments[-1].metrics
        expected = {st.device: st.compute_s for st in metrics.stages}
        for device, compute_s, _ in hops:
            if not expected.get(device):
                continue
            window = self.samples.setdefault(device, collections.deque(maxlen=ADAPT_WINDOW))
            window.append(compute_s / expected[device])
            if len(window) < ADAPT_WINDOW:
                continue
            ratio = statistics.median(window)
            base = self.baseline.setdefault(device, ratio)
            if ratio > base * (1 + ADAPT_THRESHOLD) and self.switch_to is None:
                self.adapt(device, ratio / base)
                return

    def adapt(self, device: str, factor: float) -> None:
        """Believe ``device`` ``factor`` times slower; re-plan and switch when it pays."""
        scale = self.prep.emulation.time_scale
        recent = sorted(self.done.values())[-2 * ADAPT_WINDOW:]
        self.belief = slowed(self.belief, device, factor)
        plan = replan(self.belief, self.options.replan_time_limit_s)
        old = evaluate(self.belief, self.plan)
        new = evaluate(self.belief, plan)
        remaining = self.options.requests - len(self.done)
        gain_s = (old.bottleneck_s - new.bottleneck_s) * scale * remaining
        cost_s = self.deployments[-1].deploy_s + new.latency_s * scale
        switch = gain_s > cost_s and plan.stages != self.plan.stages
        self.adaptations.append({
            "device": device, "factor": factor, "requests_answered": len(self.done),
            "predicted_period_before_s": old.bottleneck_s,
            "predicted_period_after_s": new.bottleneck_s, "gain_s": gain_s / scale,
            "switch_cost_s": cost_s / scale, "switched": switch,
            "detected_at": time.perf_counter(), "throughput_before_per_s": scale * rate(recent)})
        self.deployments[-1].metrics = old
        self.reset_adaptation()
        if switch:
            self.switch_to = plan
            if not self.pending:
                self.switch(plan)

    def switch(self, plan: Plan) -> None:
        """Deploy the adapted ``plan`` (the pipeline has drained)."""
        self.switch_to = None
        failed = self.deploy(plan, f"adapt to {self.adaptations[-1]['device']}")
        self.adaptations[-1]["switched_at"] = time.perf_counter()
        if failed:
            self.lose(failed, "lost while deploying")
