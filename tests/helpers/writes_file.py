"""A module:function reward with a side effect, for the tests that code never runs without --allow-code.

Importing this module writes $KLVIZ_TEST_MARKER (if set); so does calling `touch`.
"""

import os
from pathlib import Path


def _mark(what: str) -> None:
    marker = os.environ.get("KLVIZ_TEST_MARKER")
    if marker:
        with Path(marker).open("a") as f:
            f.write(what + "\n")


_mark("imported")


def touch(prompts, responses):
    _mark("called")
    return [0.0] * len(responses)
