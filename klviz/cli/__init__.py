"""The klviz command line: one parser, one function per command (`COMMANDS`).

Each command lives in a module of this package with `add_arguments(parser)` and `run(args) -> int`.
`main` turns a KlvizError into one sentence on stderr and exit code 2. The command modules import
torch and transformers inside their functions, and `main` adds only the chosen command's arguments:
`klviz dashboard` and `--ray`'s driver start without them (seconds of start-up; bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from klviz.threads import apply_thread_settings

apply_thread_settings()  # before anything imports torch (the command modules below do)

from klviz.cli import analyze, claims, dashboard, ppo, sample, score, summary, trajectory  # noqa: E402
from klviz.errors import KlvizError  # noqa: E402

EXIT_USAGE = 2
COMMANDS = {  # name -> (module with add_arguments and run, one-line help)
    "score": (score, "token table for given (prompt, response) pairs"),
    "analyze": (analyze, "sample responses, then score them"),
    "ppo": (ppo, "train a policy from the SFT model with the mini PPO"),
    "claims": (claims, "verdicts, computed now, on statements about KL direction and estimators"),
    "trajectory": (trajectory, "the same responses scored under every checkpoint of a run (SFT side once)"),
    "dashboard": (dashboard, "start the dashboard on loopback, opening on the given tables or pair"),
    "summary": (summary, "headline figures of a token table (--json for pipelines)"),
    "make-sample-data": (sample, "regenerate the shipped sample models and prompts"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only`, of that one (the others listed, without arguments)."""
    parser = argparse.ArgumentParser(prog="klviz", description="How far, and where, has a policy drifted from its SFT model?")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if only is None or name == only:
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named in argv (its first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        return args.run(args)
    except KlvizError as e:
        print(f"klviz: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("klviz: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print("klviz: error: out of memory: try a smaller --batch-size or --device cpu.", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: one line for the user, the traceback with KLVIZ_DEBUG=1
        if os.environ.get("KLVIZ_DEBUG"):
            raise
        print(f"klviz: internal error: {type(e).__name__}: {e} (rerun with KLVIZ_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
