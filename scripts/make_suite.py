"""Regenerate edgepart-suite: the instance files of ``instances/suite/`` and its manifest.

Builds every instance of :mod:`edgepart.suite_build` (the shipped torchvision layer graphs on
other clusters, memory-tight and cost-model variants, the PipeDream and MSR files of
``SHARED/external`` through the importers, SEIFER-style wireless networks) without torch, in a
few seconds, and writes them with the manifest. Deterministic: the same inputs give the same
bytes, and proofs already in the manifest are kept for every file that did not change (prove the
rest with ``scripts/prove_suite.py``).

    python scripts/make_suite.py [--shared ../shared] [--out instances/suite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgepart.errors import InputError
from edgepart.suite import write_suite
from edgepart.suite_build import suite_instances

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                        help="the folder holding external/ (default: ../shared beside the repo)")
    parser.add_argument("--out", type=Path, default=ROOT / "instances" / "suite")
    args = parser.parse_args()
    try:
        manifest = write_suite(suite_instances(ROOT, args.shared), args.out)
    except InputError as err:
        sys.stderr.write(f"make_suite: {err}\n")
        return 2
    proven = sum(1 for e in manifest.entries for p in e.proofs.values() if p.settled)
    print(f"{len(manifest.entries)} instances in {args.out} ({proven} settled proofs kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
