"""`klviz score --ray` and `klviz analyze --ray`: the commands' token tables through the Ray actor pool.

Each mirrors its single-process command (klviz/cli/score.py, klviz/cli/analyze.py): the same input
readers and checks run on the driver before Ray starts, the same engine runs in the actors
(klviz/distributed.py), and the same table and metadata are written atomically at the very end.
"""

from __future__ import annotations

from pathlib import Path

from klviz.cli.common import log, quiet_transformers
from klviz.distributed import (INPUT_KEY, SampleUnit, ScoreUnit, check_output, ray_session, run_units,
                               settings_from_args, sft_tokenizer, spec_from_args)
from klviz.errors import KlvizError
from klviz.io import write_table


def score_units(inputs: list, batch_size: int, top_k: int) -> list[ScoreUnit]:
    """The engine's scoring batches (klviz.engine.divergence.score_tensors: inputs sorted by prompt +
    response length, stable, then batch_size at a time), each listed in input order."""
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i].prompt_ids) + len(inputs[i].response_ids))
    return [ScoreUnit([(i, inputs[i]) for i in sorted(order[s:s + batch_size])], top_k)
            for s in range(0, len(order), batch_size)]


def sample_units(prompts: list, cfg) -> list[SampleUnit]:
    """klviz.sampling.sample's generate batches: per source, jobs (prompt, sample) batch_size at a time."""
    jobs = [(i, s) for i in range(len(prompts)) for s in range(cfg.samples_per_prompt)]
    sources = ("policy", "sft") if cfg.sample_from == "both" else (cfg.sample_from,)
    return [SampleUnit(source, b, batch, {i: prompts[i] for i, _ in batch}, cfg)
            for source in sources
            for b, batch in enumerate(jobs[s:s + cfg.batch_size] for s in range(0, len(jobs), cfg.batch_size))]


def assemble(frames: list):
    """One table from the units' frames: rows back in input order (positions ascending), INPUT_KEY dropped."""
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(INPUT_KEY, kind="stable").drop(columns=INPUT_KEY).reset_index(drop=True)


def score_on_ray(args, actor_cls=None) -> int:
    """`klviz score --ray`: inputs read and checked here, scored in the pool, one table written."""
    from klviz.engine.divergence import _validate
    from klviz.rollouts import read_rollouts, score_inputs
    from klviz.tokentable import table_metadata, vocab_metadata

    out = Path(args.out)
    check_output(out)
    settings = settings_from_args(args)
    fmt, rollouts = read_rollouts(args.input)  # malformed input fails before Ray starts or any model loads
    spec = spec_from_args(args)
    quiet_transformers()
    with sft_tokenizer(args.sft) as (tokenizer, vocab_size):
        inputs = score_inputs(rollouts, tokenizer)
    _validate(inputs, vocab_size)
    units = score_units(inputs, args.batch_size, args.top_k)
    with ray_session(settings) as ray:
        results = run_units(ray, settings, spec, units, **_cls(actor_cls))
    df = assemble([frame for frame, _ in results])
    meta = table_metadata(results[0][1], command="score", input=args.input, input_format=fmt, top_k=args.top_k)
    write_table(df, out, {**meta, **vocab_metadata(df, tokenizer)})
    log(f"wrote {len(df)} token rows from {len(inputs)} responses to {out} ({len(units)} batches on Ray)")
    return 0


def analyze_on_ray(args, actor_cls=None) -> int:
    """`klviz analyze --ray`: sampling batches in the pool, then scoring batches, one table written."""
    from klviz.cli.analyze import analyze_metadata, sampling_config
    from klviz.engine.divergence import ScoreInput
    from klviz.prompts import read_prompts
    from klviz.tokentable import vocab_metadata

    prompts = read_prompts(args.prompts)
    out = Path(args.out)
    check_output(out)
    cfg = sampling_config(args)
    settings, spec = settings_from_args(args), spec_from_args(args)
    units = sample_units(prompts, cfg)
    with ray_session(settings) as ray:
        sampled = run_units(ray, settings, spec, units, **_cls(actor_cls))
        inputs = [ScoreInput(prompt_ids=ids, response_ids=r, prompt_id=prompts[i].id, sample_id=s,
                             extra={"source": unit.source})  # klviz.sampling.sample's order: source, batch, job
                  for unit, (pairs, _) in zip(units, sampled)
                  for (i, s), (ids, r) in zip(unit.jobs, pairs) if r]
        if not inputs:
            raise KlvizError("Every sampled response was empty (the model ended each one at once), so there is "
                             "nothing to score: try other prompts or a higher temperature.")
        results = run_units(ray, settings, spec, score_units(inputs, cfg.batch_size, args.top_k),
                            **_cls(actor_cls))
    df = assemble([frame for frame, _ in results])
    with sft_tokenizer(args.sft) as (tokenizer, _):
        write_table(df, out, {**analyze_metadata(args, cfg, results[0][1]), **vocab_metadata(df, tokenizer)})
    log(f"wrote {len(df)} token rows from {len(inputs)} responses to {out} (sampled and scored on Ray)")
    return 0


def _cls(actor_cls) -> dict:
    return {} if actor_cls is None else {"actor_cls": actor_cls}
