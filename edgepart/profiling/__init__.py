"""Profiling: from a torch model and a cluster description to an edgepart instance.

The modules, in the order data flows through them:

* :mod:`~edgepart.profiling.model_spec` builds the ``nn.Module`` named by a model spec
  (``torchvision:NAME`` or ``package.module:factory``);
* :mod:`~edgepart.profiling.trace` traces it with torch.fx into partitionable units, each a list
  of fx node names that produces one tensor;
* :mod:`~edgepart.profiling.granularity` optionally merges units into blocks;
* :mod:`~edgepart.profiling.measure` counts FLOPs and bytes and times every fx node on this host;
* :mod:`~edgepart.profiling.catalog` and :mod:`~edgepart.profiling.clusters` describe the devices
  and the links between them;
* :mod:`~edgepart.profiling.profile` joins all of it into instance JSON
  (``docs/instance-format.md``).

torch is imported only by the modules that need it (``model_spec``, ``trace``, ``measure``,
``profile``, ``probe``'s benchmark), never by ``import edgepart.profiling``; the catalog and the
cluster generators work without torch. See ``docs/profiling.md``.
"""

from __future__ import annotations
