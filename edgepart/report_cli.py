"""``edgepart report TABLE``: a sweep table as one self-contained HTML page, or its summary as
Markdown (parsing and printing only; the logic is :mod:`edgepart.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgepart.cli_common import EXIT_OK, print_json
from edgepart.errors import InputError

__all__ = ["cmd_report", "register"]


def register(subparsers: Any) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser("report", help="an HTML page (or Markdown) from a sweep table")
    p.add_argument("table", help="a table written by edgepart sweep (.parquet or .csv)")
    p.add_argument("--out", default=None, metavar="REPORT.html", help="write the HTML page here")
    p.add_argument("--pareto", nargs="+", default=None, metavar="FRONT.json",
                   help="'edgepart pareto --json' outputs to draw")
    p.add_argument("--title", default="edgepart sweep report")
    p.add_argument("--markdown", action="store_true",
                   help="print the summary and per-instance gap tables as Markdown")
    p.add_argument("--pairs", nargs="+", default=(), metavar="A:B",
                   help="with --markdown: compare method A with method B (e.g. seifer:greedy)")
    p.add_argument("--json", action="store_true", help="print the per-method summary as JSON")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from edgepart.report import html_report, load_pareto, markdown_report, method_summary
    from edgepart.sweep import read_table

    if not (args.out or args.markdown or args.json):
        raise InputError("report: give --out REPORT.html, --markdown or --json")
    pairs = [_pair(p) for p in args.pairs]
    table = read_table(args.table)
    if args.out:
        pareto = load_pareto(args.pareto) if args.pareto else None
        Path(args.out).write_text(html_report(table, pareto, args.title))
    if args.json:
        print_json({"table": args.table, "rows": len(table), "html": args.out,
                    "methods": method_summary(table).to_dict(orient="records")})
    elif args.markdown:
        print(markdown_report(table, pairs))
    else:
        print(f"wrote {args.out} ({len(table)} runs)")
    return EXIT_OK


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not (sep and a and b):
        raise InputError(f"--pairs: expected METHOD_A:METHOD_B, got {text!r}")
    return a, b
