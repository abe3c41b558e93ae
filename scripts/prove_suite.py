"""Prove every instance of edgepart-suite and record it in the manifest (resumable).

For each instance and objective (bottleneck, latency) runs the exact method (default ``auto``)
with a per-run time limit and writes the proof (status, optimum or best bound and gap, the
backend that answered, its time, the limit, the machine) and the plan into
``instances/suite/``. The manifest is rewritten after every run, so an interrupted run resumes:
settled proofs are skipped unless ``--force``, unsettled ones are retried only with a longer
``--time-limit`` than they had.

    python scripts/prove_suite.py [--time-limit 60] [--force] [--only NAME ...] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgepart.errors import InputError
from edgepart.suite import MANIFEST, prove_suite

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "instances" / "suite" / MANIFEST)
    parser.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                        help="seconds per instance and objective (default 60)")
    parser.add_argument("--method", default="auto", help="exact method (default auto)")
    parser.add_argument("--force", action="store_true", help="re-prove settled entries too")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    try:
        manifest = prove_suite(args.manifest, time_limit=args.time_limit, method=args.method,
                               force=args.force, names=args.only, threads=args.threads)
    except InputError as err:
        sys.stderr.write(f"prove_suite: {err}\n")
        return 2
    proofs = [p for e in manifest.entries for p in e.proofs.values()]
    by_status = {s: sum(p.status == s for p in proofs) for s in sorted({p.status for p in proofs})}
    print(f"{len(manifest.entries)} instances; proofs by status: {by_status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
