"""The `export` verb: prune, write everything into a folder and verify it on reload."""

from __future__ import annotations

import argparse
import sys

from pruneviz.cli.evaluate import measure
from pruneviz.cli.options import read_plan_file
from pruneviz.errors import PrunevizError
from pruneviz.output.json_safe import safe_json


def cmd_export(args: argparse.Namespace) -> int:
    """Prune as the plan options say, export everything into --out and verify it."""
    from pruneviz.cli.output import run_inputs
    from pruneviz.output.bundle import export_bundle

    if args.plan is not None and read_plan_file(args.plan).refit is not None:
        raise PrunevizError(
            f"the plan {args.plan} refits the kept weights, which export does not do yet; "
            "write the refit weights with `pruneviz prune --plan` instead")
    bench, _, _ = measure(args)
    result = export_bundle(bench, args.out, slim=args.slim, latency=args.latency,
                           force=args.force, inputs=run_inputs(bench, args),
                           deploy=getattr(args, "deploy", True))
    if args.json:
        print(safe_json(result.to_dict()))
    else:
        print(result.status)
        for check in result.checks:
            print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        for name, size in result.sizes().items():
            print(f"{size:>10,} B  {args.out / name}")
        if result.deploy:
            print("deployment files (each checked before it was written):")
        for row in result.deploy:
            shown = "" if row.size is None else f"{row.size:,} B"
            print(f"{shown:>12}  {row.name}  {row.status}: {row.detail}")
        print(f"slim: {result.slim_note}")
        print(f"reproduce: {result.command}")
    if not result.passed:
        print(f"pruneviz: error: the export in {args.out} did not verify: {result.status}",
              file=sys.stderr)
        return 1
    return 0
