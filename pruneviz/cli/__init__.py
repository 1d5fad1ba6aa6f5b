"""`python -m pruneviz` / `pruneviz`: the library's verbs on the command line.

Each verb makes library calls and prints either a short human summary or, with --json,
one JSON object on stdout. Errors are one line on stderr and a non-zero exit status
(2 for a problem with the input, 1 for an internal error); never a traceback, unless
PRUNEVIZ_DEBUG=1 is set.

The parser is in `parser`, the options shared by the verbs in `options`, the shared
output in `output`; the verbs are in `evaluate` (samples, evaluate, prune),
`sensitivity`, `finetune` (with `distributed` for torchrun), `export`, `bench` and
`serve` (the app).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pruneviz.cli.bench import cmd_bench
from pruneviz.cli.distributed import rank_tag
from pruneviz.cli.evaluate import cmd_evaluate, cmd_prune, cmd_samples
from pruneviz.cli.export import cmd_export
from pruneviz.cli.finetune import cmd_finetune
from pruneviz.cli.parser import build_parser
from pruneviz.cli.sensitivity import cmd_sensitivity
from pruneviz.cli.serve import cmd_serve
from pruneviz.errors import PrunevizError, shortened

__all__ = ["COMMANDS", "build_parser", "main"]


COMMANDS = {"samples": cmd_samples, "evaluate": cmd_evaluate, "prune": cmd_prune,
            "sensitivity": cmd_sensitivity, "export": cmd_export, "finetune": cmd_finetune,
            "bench": cmd_bench, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the verb, turn errors into one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except KeyboardInterrupt:
        print(f"\npruneviz: stopped by Ctrl-C{rank_tag()} before {args.verb} finished: "
              "files already written are complete and kept, none is half-written; the rest "
              "was not written", file=sys.stderr)
        return 130
    except RecursionError:
        print(f"pruneviz: error{rank_tag()}: an input is nested too deeply to be read (a "
              "plan or data file thousands of levels deep); check the files given",
              file=sys.stderr)
        return 2
    except (PrunevizError, ValueError, OSError, KeyError) as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        message = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
        print(f"pruneviz: error{rank_tag()}: {shortened(message)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        print(f"pruneviz: internal error{rank_tag()}: {type(exc).__name__}: {shortened(str(exc))} "
              "(set PRUNEVIZ_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
