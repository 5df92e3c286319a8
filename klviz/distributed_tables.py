"""`klviz score | analyze | trajectory --ray`: the commands' token tables through the Ray actor pool.

Each mirrors its single-process command (klviz/cli/score.py, analyze.py, trajectory.py): the same input
readers and checks run on the driver before Ray starts, the same engine runs in the actors
(klviz/distributed.py), and the same table and metadata are written atomically at the very end.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from klviz.cli.common import log, quiet_transformers
from klviz.cli.score import check_out
from klviz.distributed import (INPUT_KEY, SampleUnit, ScoreBatch, ScoreWork, TrajectoryUnit, actor_pool,
                               pool_resources, ray_data, ray_session, run_units, same_extras, score_units,
                               settings_from_args, spec_from_args)
from klviz.errors import KlvizError
from klviz.io import write_table


def sft_tokenizer(sft: str):
    """(tokenizer, vocabulary size) of the SFT checkpoint, read without loading its weights; `analyze` and
    `trajectory --ray` read it on ray_beside's thread, whose imports (transformers, torch) Ray's start hides."""
    quiet_transformers()
    from klviz.checkpoints import extract_zip
    from klviz.models import _folder_kind, _load_tokenizer, _read_config, _require_gguf, locate

    kind, path = locate(sft)
    with tempfile.TemporaryDirectory(prefix="klviz-ray-") as tmp:
        gguf = None
        if kind == "zip":
            path = extract_zip(path, Path(tmp), sft)
            kind = _folder_kind(path, sft)
        elif kind == "gguf":
            _require_gguf(sft)
            path, gguf = path.parent, str(path.resolve())
        if kind == "adapter":
            raise KlvizError(f"{sft} is a PEFT adapter: --ray needs the SFT model as a full checkpoint.")
        config = _read_config(path, sft, gguf)
        return _load_tokenizer(path, sft, gguf), int(config.vocab_size)  # in memory: the folder may go


def sample_units(prompts: list, cfg) -> list[SampleUnit]:
    """klviz.sampling.sample's generate batches: per source, jobs (prompt, sample) batch_size at a time."""
    jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.samples_per_prompt)]
    sources = ("policy", "sft") if cfg.sample_from == "both" else (cfg.sample_from,)
    return [SampleUnit(source, b, batch, {i: prompts[i] for i, _ in batch}, cfg)
            for source in sources
            for b, batch in enumerate(jobs[s:s + cfg.batch_size] for s in range(0, len(jobs), cfg.batch_size))]


def assemble(frames: list, major=None):
    """One table from the units' frames: rows back in input order (positions ascending, kept by a stable
    sort), INPUT_KEY dropped. `major(df)`, a multiple of the input count per row (trajectory: the
    checkpoint's rank times it), sorts before the input index."""
    import numpy as np
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    for c in [c for c in df.columns if len({str(f[c].dtype) for f in frames}) > 1]:
        # e.g. an extra column some inputs lack: all None (object) in one unit's rows, float64 in another's, so
        # object once concatenated; the single process builds it from one list, whose type pandas infers once
        df[c] = pd.Series(df[c].tolist(), index=df.index)
    key = df[INPUT_KEY].to_numpy(np.int64) + (0 if major is None else major(df).to_numpy(np.int64))
    return df.iloc[np.argsort(key, kind="stable")].drop(columns=INPUT_KEY).reset_index(drop=True)


def score_on_ray(args, actor_cls=None) -> int:
    """`klviz score --ray`: the input read and parsed here (errors name the file and line before Ray
    starts), tokenized, checked and scored in the pool (ScoreWork: the driver never imports torch or
    transformers), one table written while Ray shuts down."""
    from klviz.rollouts import read_rollouts
    from klviz.tokentable import table_metadata, vocab_entry

    out = Path(args.out)
    check_out(out)
    settings = settings_from_args(args)
    fmt, rollouts = read_rollouts(args.input)  # malformed or empty input fails before Ray starts
    spec = spec_from_args(args)
    work = ScoreWork(rollouts, args.batch_size, args.top_k)
    units = [ScoreBatch(k) for k in range(work.n_batches)]

    def write(results):
        df = assemble([frame for (frame, _), _ in results])
        vocab = {t: text for (_, part), _ in results for t, text in part.items()}
        meta = table_metadata(results[0][1], command="score", input=args.input, input_format=fmt, top_k=args.top_k)
        write_table(df, out, {**meta, **vocab_entry(vocab)})
        return len(df)

    with ray_beside(settings, ray_data) as (ray, _, later):  # Ray Data imported while Ray starts
        rows = later(write, run_units(ray, settings, spec, units, work=work, **_cls(actor_cls)))
    log(f"wrote {rows()} token rows from {len(rollouts)} responses to {out} ({len(units)} batches on Ray)")
    return 0


def analyze_on_ray(args, actor_cls=None) -> int:
    """`klviz analyze --ray`: sampling batches, then scoring batches, on the same actors (klviz.distributed.
    actor_pool), one table written (while Ray shuts down)."""
    from klviz.cli.analyze import analyze_metadata, sampling_config
    from klviz.prompts import read_prompts
    from klviz.tokentable import vocab_metadata

    prompts = read_prompts(args.prompts)
    out = Path(args.out)
    check_out(out)
    cfg = sampling_config(args)
    settings, spec = settings_from_args(args), spec_from_args(args)

    def write(results):
        df = assemble([frame for frame, _ in results])
        write_table(df, out, {**analyze_metadata(args, cfg, results[0][1]), **vocab_metadata(df, tokenizer)})
        return len(df)

    with ray_beside(settings, lambda: sft_tokenizer(args.sft)) as (ray, (tokenizer, _), later), \
            actor_pool(ray, settings, spec, **_cls(actor_cls)) as run:  # one pool: sampled, then scored
        units = sample_units(prompts, cfg)
        inputs = sampled_inputs(prompts, units, run(units))
        if not inputs:
            raise KlvizError("Every sampled response was empty (the model ended each one at once), so there is "
                             "nothing to score: try other prompts or a higher temperature.")
        rows = later(write, run(score_units(inputs, cfg.batch_size, args.top_k)))
    log(f"wrote {rows()} token rows from {len(inputs)} responses to {out} (sampled and scored on Ray)")
    return 0


def sampled_inputs(prompts: list, units: list[SampleUnit], sampled: list) -> list:
    """The non-empty responses of the sampling units' results, as ScoreInputs in unit and job order."""
    from klviz.engine.divergence import ScoreInput

    return [ScoreInput(prompt_ids=ids, response_ids=r, prompt_id=prompts[i].id, sample_id=s,
                       extra={"source": unit.source})
            for unit, (pairs, _) in zip(units, sampled) for (i, s), (ids, r) in zip(unit.jobs, pairs) if r]


def trajectory_units(ray, settings, spec, inputs: list, checkpoints: list, args) -> list[TrajectoryUnit]:
    """The series' scoring batches (klviz.engine.divergence.batch_order) cut into one run of whole batches per
    actor: each actor loads every checkpoint once, runs the SFT decoder once per batch and scores every
    checkpoint against it. A run's inputs, listed in input order, sort back into the same batches."""
    from klviz.engine.divergence import batch_order

    _, batches = batch_order(inputs, args.batch_size)
    inputs = same_extras(inputs)
    n = min(len(batches), pool_resources(ray, settings, spec.device)[0])
    runs = [batches[len(batches) * k // n:len(batches) * (k + 1) // n] for k in range(n)]
    return [TrajectoryUnit([(i, inputs[i]) for i in sorted(i for b in run for i in b)], checkpoints,
                           args.base or args.sft, args.top_k, args.batch_size) for run in runs]


def trajectory_on_ray(args, actor_cls=None) -> int:
    """`klviz trajectory --ray`: inputs read (or sampled from the SFT model on the pool's actors), then each
    actor scores its batches under every checkpoint; one table written, checkpoint by checkpoint, input order."""
    from klviz.cli.trajectory import (ALL_EMPTY, check_args, finish_metadata, responses_metadata, sampling_config,
                                      series_metadata)
    from klviz.tokentable import vocab_metadata

    checkpoints = check_args(args)
    settings, spec = settings_from_args(args), spec_from_args(args)
    with ray_beside(settings, lambda: sft_tokenizer(args.sft)) as (ray, (tokenizer, vocab_size), _):
        if args.input:  # one pass: Ray Data's pool
            from klviz.rollouts import read_rollouts, score_inputs

            fmt, rollouts = read_rollouts(args.input)
            inputs, source = score_inputs(rollouts, tokenizer), responses_metadata(args, fmt=fmt)
            pool = contextlib.nullcontext(lambda units: run_units(ray, settings, spec, units, **_cls(actor_cls)))
        else:  # sampled from the SFT model, then scored: two passes on the same actors
            from klviz.prompts import read_prompts

            cfg, prompts = sampling_config(args), read_prompts(args.prompts)
            pool = actor_pool(ray, settings, spec, **_cls(actor_cls))
        with pool as run:
            if not args.input:
                sampled = sample_units(prompts, cfg)
                inputs, source = sampled_inputs(prompts, sampled, run(sampled)), responses_metadata(args, cfg=cfg)
                if not inputs:
                    raise KlvizError(ALL_EMPTY)
            from klviz.engine.divergence import _validate  # torch: imported by prepare() by now

            _validate(inputs, vocab_size)
            units = trajectory_units(ray, settings, spec, inputs, checkpoints, args)
            results = run(units)
    rank = {c.name: k for k, c in enumerate(checkpoints)}
    df = assemble([frame for frame, _ in results], lambda d: d["checkpoint"].map(rank) * len(inputs))
    meta = {**series_metadata(args, checkpoints, results[0][1].sft_info), **source}
    write_table(df, Path(args.out), {**finish_metadata(meta, checkpoints), **vocab_metadata(df, tokenizer)})
    log(f"wrote {len(df)} token rows ({len(inputs)} responses x {len(checkpoints)} checkpoints) to {args.out} "
        f"({len(units)} runs of batches on Ray)")
    return 0


@contextlib.contextmanager
def ray_beside(settings, prepare):
    """(ray, prepare()'s result, later): the driver's own work overlapped with Ray's fixed costs.

    ray.init mostly waits for the processes it starts (GCS, raylet, agents) and ray.shutdown for them to
    end, so `prepare` (reading the tokenizer, tokenizing, cutting batches) runs on a thread while Ray
    starts, and `later(fn, *args)` runs fn (assembling and writing the table) on it while Ray shuts down;
    `later` returns a callable giving fn's result once the session is closed (fn's error raised there).
    An error anywhere still shuts Ray down (ray_session) and writes nothing more."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="klviz-ray-driver") as pool:
        prepared = pool.submit(prepare)
        with ray_session(settings) as ray:
            yield ray, prepared.result(), lambda fn, *a: pool.submit(fn, *a).result


def _cls(actor_cls) -> dict:
    return {} if actor_cls is None else {"actor_cls": actor_cls}
