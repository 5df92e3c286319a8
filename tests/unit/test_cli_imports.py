"""The command line adds only the chosen command's arguments, and its modules import torch inside their
functions: `klviz dashboard` and a `--ray` driver start without torch, transformers or pandas."""

import subprocess
import sys

from klviz.cli import COMMANDS, build_parser


def test_dashboard_and_summary_parse_without_importing_torch_transformers_or_pandas():
    code = ("import sys; from klviz.cli import build_parser, _command\n"
            "for argv in (['dashboard', 't.parquet'], ['summary', 't.parquet'], ['score', '--ray']):\n"
            "    build_parser(_command(argv))\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_full_parser_still_has_every_command_and_the_chosen_one_its_flags():
    from klviz.cli import _command

    full = build_parser()
    for name in COMMANDS:
        assert full.parse_args([name, *_required(name)]).command == name
    assert _command(["--x", "ppo", "--sft", "s"]) == "ppo" and _command(["nope"]) is None
    args = build_parser("ppo").parse_args(["ppo", "--sft", "s", "--reward", "length", "--steps", "2", "--out", "o"])
    assert args.steps == 2 and args.approxkl_watch_steps == 10


def _required(name: str) -> list[str]:
    return {"score": ["--policy", "p", "--sft", "s", "--input", "i", "--out", "o"],
            "analyze": ["--policy", "p", "--sft", "s", "--prompts", "f", "--out", "o"],
            "ppo": ["--sft", "s", "--reward", "length", "--steps", "2", "--out", "o"],
            "trajectory": ["--sft", "s", "--checkpoints", "c", "--input", "i", "--out", "o"],
            "summary": ["t.parquet"], "dashboard": [], "claims": [], "make-sample-data": []}[name]
