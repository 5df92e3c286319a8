"""Benchmark: where `klviz score --ray` spends its seconds, phase by phase, on bench/ray.py's workload.

bench/ray.py times whole runs; this one runs the same command (same models and inputs, made by
bench/ray.py's `prepare`) once in a fresh process with a timestamp, in seconds since that process
started, at each phase: the CLI's imports, ray.init, the actor's constructor (imports and both models),
each batch in the actor, ray.shutdown, and the end of main. The driver's stamps come from wrappers
around klviz.distributed_tables' functions; the actor's from a subclass of PairActor passed as
actor_cls (defined in __main__, so Ray ships it by value and its stamps use the driver's clock origin).
Usage: python bench/ray_phases.py [--actors 1] [--n-seq 64]   (prints the phases, then the wall time)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = float(os.environ.get("KLVIZ_PHASES_T0", "0"))


def stamp(what: str) -> None:
    print(f"[phase {time.time() - T0:7.2f} s] {what}", file=sys.stderr, flush=True)


def instrumented_main(argv: list[str]) -> int:
    """`klviz` main with phase stamps (runs in the child process)."""
    stamp("python started")
    from klviz.threads import apply_thread_settings

    apply_thread_settings()
    from klviz import distributed, distributed_tables as dt
    from klviz.cli import main

    stamp("klviz.cli imported")

    class PhaseActor(distributed.PairActor):
        def __init__(self, spec, work=None):
            stamp(f"actor {os.getpid()}: constructor begins (process up, ray and klviz.distributed imported)")
            super().__init__(spec, work)
            stamp(f"actor {os.getpid()}: both models loaded")

        def __call__(self, batch):
            out = super().__call__(batch)
            stamp(f"actor {os.getpid()}: batch done")
            return out

    session, run_units = dt.ray_session, dt.run_units

    @contextlib.contextmanager
    def timed_session(settings):
        stamp("ray.init begins")
        with session(settings) as ray:
            stamp("ray.init done")
            try:
                yield ray
            finally:
                stamp("ray.shutdown begins")
        stamp("ray.shutdown done")

    def timed_run_units(*a, **k):
        stamp("Ray Data pipeline begins")
        try:
            return run_units(*a, **{"actor_cls": PhaseActor, **k})
        finally:
            stamp("Ray Data pipeline done (every batch back on the driver)")

    dt.ray_session, dt.run_units = timed_session, timed_run_units
    try:
        return main(argv)
    finally:
        stamp("main returned")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--actors", default="1")
    ap.add_argument("--n-seq", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("bench_ray", ROOT / "bench" / "ray.py")
    bench_ray = importlib.util.module_from_spec(spec)  # bench/ray.py, not the Ray package
    spec.loader.exec_module(bench_ray)

    with tempfile.TemporaryDirectory(prefix="klviz-bench-ray-phases-") as tmp:
        work = argparse.Namespace(n_seq=args.n_seq, prompt_len=64, response_len=128)
        policy, sft, inp = bench_ray.prepare(Path(tmp), work)
        cmd = [sys.executable, __file__, "--child", "score", "--policy", str(policy), "--sft", str(sft),
               "--input", str(inp), "--out", str(Path(tmp) / "out.parquet"), "--batch-size", str(args.batch_size),
               "--device", "cpu", "--dtype", "float32", "--ray", "--actors", args.actors]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "KLVIZ_PHASES_T0": repr(time.time())}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    phases = [line.split("[phase", 1)[1] for line in done.stderr.splitlines() if "[phase" in line]
    print("\n".join("[phase" + p for p in phases))
    if done.returncode != 0:
        raise SystemExit(f"failed:\n{done.stderr[-3000:]}")
    print(f"wall {wall:.2f} s (process exit included); load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # bench/ on sys.path would let bench/ray.py shadow the Ray package
        sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
        raise SystemExit(instrumented_main(sys.argv[2:]))
    main()
