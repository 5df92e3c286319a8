"""Exact categorical math (toy) and the verdicts of `klviz claims`."""
