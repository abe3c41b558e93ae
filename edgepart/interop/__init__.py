"""Interop with other tools' formats (see ``docs/interop.md``).

* :mod:`~edgepart.interop.pipedream`: PipeDream profiler graphs -> instances;
* :mod:`~edgepart.interop.msr`: MSR device-placement inputs (Tarnawski et al., NeurIPS 2020) ->
  instances, and their split files <-> plans;
* :mod:`~edgepart.interop.torch_pipelining`: plans -> ``torch.distributed.pipelining`` split specs;
* :mod:`~edgepart.interop.cli`: ``edgepart import ...`` and ``edgepart export-plan ...``.

torch is imported only by ``torch_pipelining.fx_calls`` and the ``export-plan torch`` command.
"""
