"""Past one machine: `klviz score | analyze | trajectory --ray` runs the engine in a Ray Data actor pool.

The driver reads and parses every input first (errors name the file and line, before Ray starts),
the work is cut into the very batches the single process would run, and each call hands one batch to
an actor (`PairActor`, a Ray Data callable class holding both models once per actor). For `score` the
actors themselves tokenize and check the rollouts (`ScoreWork`, given to each actor once) and a unit
names a batch by index, so the driver never imports torch or transformers (bench/RESULTS.md: ~5 s of
a 2-core box's CPU, and the wait before the pipeline could start). Each actor returns only the table's
rows for its batch (never vocabulary-sized vectors); the driver puts them back in input order and
writes the same parquet, with the same metadata, atomically (klviz.io.write_table), so a failure
anywhere leaves no output and never replaces a complete one.

Why the batches matter: klviz.engine.divergence.score sorts inputs by length and scores them
batch_size at a time, and klviz.sampling reseeds every generate batch from (seed, source, batch
index). Giving an actor a whole batch, with its original index, makes it run the same padded
shapes with the same seed, so the table equals the single process's (tests/integration/test_ray.py).
`analyze` samples and then scores on the same actors (`actor_pool`: Ray's core ActorPool, two passes):
scoring batches are cut from all the sampled lengths, so they can only be formed once every response
is back, and a Ray Data actor pool lives for one map_batches only (two stages loaded the pair twice).
`trajectory` hands each actor a run of whole batches (TrajectoryUnit): SFT decoder once per batch, each
checkpoint once per run.

Ray Data API (docs.ray.io, Ray 2.60): `ray.data.from_items(items, override_num_blocks=...)`;
`Dataset.map_batches(CallableClass, fn_constructor_args=..., batch_size=...,
compute=ActorPoolStrategy(size=n), num_gpus=..., num_cpus=..., **ray_remote_args)`: a class runs as a
pool of `n` stateful actors (`concurrency=n` says the same, deprecated since Ray 2.51), and
`ray_remote_args` such as `max_restarts` / `max_task_retries` go to the actors ("Actor Fault
Tolerance": a dead actor is restarted by rerunning its constructor, and its unfinished tasks are
retried on it). Core API (docs.ray.io, "Actor Fault Tolerance", `ray.util.ActorPool`): the same
`max_restarts` / `max_task_retries` options on `ray.remote(cls).options(...)`, and `ActorPool(actors).map(fn,
values)` yields the results in the values' order.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import types
from dataclasses import dataclass, field, replace

from klviz.errors import KlvizError

RAY_MISSING = ("--ray needs the optional Ray package, which is not installed: "
               "pip install 'klviz[ray]' (or pip install -r requirements-ray.txt).")
MAX_RESTARTS = 3
"""Times Ray starts a dead actor again (a crash, a preempted node) before the run fails."""
MAX_TASK_RETRIES = 3
"""Times a batch is retried on a restarted actor. Finite: a batch that kills every actor must end the run."""
INPUT_KEY = "_input"
"""Extra column carrying each row's input index from the actors; dropped before writing."""


def require_ray():
    """The `ray` module, Ray Data found beside it, or a KlvizError saying how to install them. Ray Data
    itself is imported by `ray_data()` when needed (~1.2 s: `klviz score --ray` spends it while ray.init runs)."""
    import importlib.util

    try:
        import ray
    except ImportError:
        raise KlvizError(RAY_MISSING) from None
    if importlib.util.find_spec("ray.data") is None:
        raise KlvizError(RAY_MISSING)
    return ray


RAY_DATA_FIRST_RUN = ("ray.data._internal.issue_detection.issue_detector_configuration",
                      "ray.data._internal.logical.optimizers", "ray.data._internal.execution.streaming_executor",
                      "ray.dag.compiled_dag_node", "pydantic.v1.fields")
"""Modules Ray Data 2.60 imports only when a dataset first runs (`python -X importtime`: ~0.8 s of the
driver's CPU on the 2-core box, spent while the pool's actors wait to be created); `ray_data` imports
them ahead, while ray.init runs. A name another Ray version lacks is skipped: they are only a head start."""


def ray_data():
    """The `ray.data` module, with RAY_DATA_FIRST_RUN imported (its own dependencies missing: the same
    sentence as Ray's)."""
    import importlib

    try:
        import ray.data
    except ImportError:
        raise KlvizError(RAY_MISSING) from None
    for name in RAY_DATA_FIRST_RUN:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    return ray.data


@dataclass(frozen=True)
class PairSpec:
    """What each actor loads (by path: on a cluster every node must see the same paths)."""

    policy: str | None
    """Policy checkpoint, as given to load_pair; None: the SFT model alone (`klviz trajectory`, which
    loads each checkpoint in turn, and samples from the SFT model with it standing in as the policy)."""
    sft: str
    """SFT checkpoint."""
    policy_base: str | None
    """Base of a LoRA policy adapter (None: the SFT checkpoint)."""
    device: str
    """"auto", "cpu", "cuda", ... as the actor's load_pair / load_model take it (Ray hides the other actors' GPUs)."""
    dtype: str
    """Weights' dtype, as load_pair takes it."""
    threads: int = 1
    """torch threads of a CPU actor: the CPUs Ray reserved for it."""


@dataclass(frozen=True)
class PairFacts:
    """What the metadata records about the loaded pair: Pair's attributes of the same names, with every
    torch.dtype and torch.device as its str() (which the metadata writes), so that unpickling them on the
    driver imports no torch (`klviz score --ray`'s driver never does)."""

    dtype: str
    device: str
    policy_info: object  # klviz.sources.LoadInfo (torch-free) or None
    sft_info: object

    @classmethod
    def of(cls, pair) -> "PairFacts":
        def plain(info):
            return None if info is None else replace(info, dtype=str(info.dtype), device=str(info.device))

        return cls(str(pair.dtype), str(pair.device), plain(pair.policy_info), plain(pair.sft_info))


@dataclass(frozen=True)
class ScoreUnit:
    """One scoring batch: (input index, ScoreInput) in input order, scored in one engine batch."""

    items: list
    top_k: int


@dataclass(frozen=True)
class ScoreWork:
    """`klviz score --ray`'s whole input, handed to each actor once (a constructor argument): the actor
    tokenizes the rollouts with its pair's tokenizer and checks them against its policy's vocabulary, as
    the single process does, and cuts the same batches (score_units). The driver then never imports
    torch or transformers: ~5 s of CPU, and the wait before the pipeline starts, on a 2-core box
    (bench/RESULTS.md)."""

    rollouts: list  # klviz.rollouts.Rollout, in input order
    batch_size: int
    top_k: int

    @property
    def n_batches(self) -> int:
        return -(-len(self.rollouts) // self.batch_size)


@dataclass(frozen=True)
class ScoreBatch:
    """Batch `index` of the actor's ScoreWork (score_units' order). Its result is (rows, {token id: text}
    for every id the rows name), the text decoded by the pair's tokenizer for the table's metadata."""

    index: int


@dataclass(frozen=True)
class SampleUnit:
    """One generate batch of klviz.sampling.sample: `jobs` are (prompt index, sample id)."""

    source: str
    batch_index: int
    jobs: list
    prompts: dict = field(default_factory=dict)  # prompt index -> Prompt, the ones `jobs` name
    cfg: object = None


@dataclass(frozen=True)
class TrajectoryUnit:
    """Whole scoring batches of `klviz trajectory` under every checkpoint: (input index, ScoreInput) in
    input order. The actor runs the SFT decoder once per batch, then each checkpoint against it."""

    items: list
    checkpoints: list  # klviz.trajectory.Checkpoint, in step order
    base: str | None   # base model of LoRA checkpoints
    top_k: int
    batch_size: int


class PairActor:
    """A Ray Data callable class: both models loaded once per actor; one work unit per row."""

    def __init__(self, spec: PairSpec, work: ScoreWork | None = None):
        import torch

        from klviz.cli.common import quiet_transformers

        quiet_transformers()
        torch.set_num_threads(max(1, spec.threads))
        self.spec, self.work, self.error, self.facts, self._checked = spec, work, None, None, None
        try:
            self.pair = self._load(spec)
        except KlvizError as e:  # the user's mistake: every call reports it (a raise would only restart us)
            self.error = e
            return
        self.facts = PairFacts.of(self.pair)

    @staticmethod
    def _load(spec: PairSpec):
        """load_pair's Pair, or for spec.policy None a Pair-like SFT model standing in as its own policy
        (what single-process `klviz trajectory` samples with: klviz/cli/trajectory.py)."""
        from klviz.models import load_model, load_pair

        if spec.policy is not None:
            return load_pair(spec.policy, spec.sft, device=spec.device, dtype=spec.dtype,
                             policy_base=spec.policy_base)
        sft = load_model(spec.sft, device=spec.device, dtype=spec.dtype, role="sft")
        return types.SimpleNamespace(policy=sft.model, sft=sft.model, tokenizer=sft.tokenizer, dtype=sft.info.dtype,
                                     device=sft.info.device, policy_info=None, sft_info=sft.info)

    def __call__(self, batch: dict) -> dict:
        return self.run_batch(batch)

    def run_batch(self, batch: dict) -> dict:
        """Ray Data's call (as `__call__`) and ActorPool's: each pickled unit's (result, facts), pickled."""
        import numpy as np

        results = [pickle.dumps((self.run(pickle.loads(bytes(x))), self.facts)) for x in batch["payload"]]
        return {"unit": np.asarray(batch["unit"]), "result": np.array(results, dtype=object)}

    def run(self, unit):
        """The unit's result, or the KlvizError it met: returned, not raised, so that it reaches the
        driver as itself (Ray's wrappers keep only its text) and is not retried (it would fail again)."""
        if self.error is not None:
            return self.error
        try:
            return self._run(unit)
        except KlvizError as e:
            return e

    def _run(self, unit):
        if isinstance(unit, ScoreBatch):
            return self.score_batch(unit)
        if isinstance(unit, ScoreUnit):
            return self.score(unit)
        if isinstance(unit, TrajectoryUnit):
            return self.trajectory(unit)
        return self.sample(unit)

    def score(self, unit: ScoreUnit):
        """The unit's rows of the token table, with its input indices in INPUT_KEY."""
        from klviz.engine.divergence import score

        inputs = tagged(unit.items)
        p = self.pair
        return score(p.policy, p.sft, p.tokenizer, inputs, top_k=unit.top_k, batch_size=len(inputs))

    def score_batch(self, unit: ScoreBatch):
        """(rows, {token id: text}) of batch `unit.index` of the ScoreWork's batches. The first call checks
        every rollout (`_checked_batches`); each batch's rollouts are then tokenized again, alone, so an
        actor keeps the rollouts' text and one batch's token ids, not every input's."""
        from klviz.rollouts import score_inputs
        from klviz.tokentable import vocab_map

        if self._checked is None:
            self._checked = self._checked_batches()
        batches, extra_keys = self._checked
        batch = batches[unit.index]
        rollouts = [self.work.rollouts[i] for i in batch]
        inputs = same_extras(score_inputs(rollouts, self.pair.tokenizer), extra_keys)
        frame = self.score(ScoreUnit(list(zip(batch, inputs)), self.work.top_k))
        return frame, vocab_map(frame, self.pair.tokenizer)

    def _checked_batches(self) -> tuple[list[list[int]], list[str]]:
        """(the engine's batches of input indices, every extra key): the rollouts tokenized and checked as
        the single process does (klviz.rollouts.score_inputs, then the engine's check against the policy's
        vocabulary, both in input order, so the first bad input is the same one, named the same way),
        TOKENIZE_CHUNK at a time, keeping only each input's length."""
        from klviz.engine.divergence import _validate
        from klviz.rollouts import score_inputs

        rollouts, vocab = self.work.rollouts, self.pair.policy.get_output_embeddings().weight.shape[0]
        lengths = []
        for start in range(0, len(rollouts), TOKENIZE_CHUNK):
            inputs = score_inputs(rollouts[start:start + TOKENIZE_CHUNK], self.pair.tokenizer)
            _validate(inputs, vocab, start=start)
            lengths += [x.length for x in inputs]
        return length_batches(lengths, self.work.batch_size), sorted({k for r in rollouts for k in r.extra})

    def trajectory(self, unit: TrajectoryUnit):
        """klviz.trajectory.trajectory_table over the unit's batches (SFT decoder once per batch, then
        each checkpoint, loaded once per unit, scored against it), with input indices in INPUT_KEY."""
        from klviz.models import load_model
        from klviz.trajectory import trajectory_table

        spec, p = self.spec, self.pair

        def load(ck):
            return load_model(str(ck.path), device=spec.device, dtype=spec.dtype, base=unit.base, role=ck.name)

        return trajectory_table(p.sft, p.tokenizer, unit.checkpoints, tagged(unit.items), load, top_k=unit.top_k,
                                batch_size=unit.batch_size)

    def sample(self, unit: SampleUnit) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) per job: batch `batch_index` of klviz.sampling.sample, same seed."""
        from klviz.sampling import prompt_ids, sample_batch, warn_forcing

        order = sorted(unit.prompts)
        ids = dict(zip(order, prompt_ids(self.pair, [unit.prompts[i] for i in order], unit.cfg)))
        warn_forcing(self.pair, unit.source)
        responses = sample_batch(self.pair, unit.source, unit.batch_index, [ids[i] for i, _ in unit.jobs], unit.cfg)
        return [(list(ids[i]), r) for (i, _), r in zip(unit.jobs, responses)]


TOKENIZE_CHUNK = 1024
"""Rollouts a ScoreWork actor tokenizes at once while checking them (their token ids are then dropped)."""


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The engine's scoring batches for inputs of these prompt + response lengths
    (klviz.engine.divergence.length_order, what score_tensors runs), each listed in input order."""
    from klviz.engine.divergence import length_order

    return [sorted(batch) for batch in length_order(lengths, batch_size)[1]]


def score_units(inputs: list, batch_size: int, top_k: int) -> list[ScoreUnit]:
    """The engine's scoring batches of `inputs` (length_batches), each (input index, ScoreInput) in input order."""
    inputs = same_extras(inputs)
    return [ScoreUnit([(i, inputs[i]) for i in b], top_k)
            for b in length_batches([x.length for x in inputs], batch_size)]


def same_extras(inputs: list, keys: list[str] | None = None) -> list:
    """Every input with every extra key (`keys`, or all the inputs' own; None where one had none, as
    token_frame fills it), so that each unit's frame has the single table's columns in its order,
    whichever inputs the unit holds."""
    keys = sorted({k for x in inputs for k in x.extra}) if keys is None else keys
    return [replace(x, extra={k: x.extra.get(k) for k in keys}) for x in inputs]


def tagged(items: list) -> list:
    """The ScoreInputs of (input index, ScoreInput) items, each carrying its index in INPUT_KEY."""
    return [replace(x, extra={**x.extra, INPUT_KEY: i}) for i, x in items]


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide the actor pool runs."""

    address: str | None = None
    """ray.init's address: None starts a local cluster, "auto" joins a running one, or "host:port"."""
    actors: int | None = None
    """Actors in the pool; None: one per GPU, else one (using every CPU)."""


@contextlib.contextmanager
def ray_session(settings: RaySettings):
    """Connected Ray (reusing one already initialised); shut down after, only if started here."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        if settings.address is None:  # our own throwaway cluster: no usage report ("Usage Stats Collection",
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # docs.ray.io/en/latest/cluster/usage-stats.html)
        try:
            ray.init(address=settings.address, include_dashboard=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise KlvizError(f"Could not reach the Ray cluster at {settings.address!r} ({e}).") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def pool_resources(ray, settings: RaySettings, device: str) -> tuple[int, dict]:
    """(actors, per-actor resources): one GPU per actor where there are GPUs, else CPUs split evenly."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 1))
    use_gpus = gpus > 0 and device in ("auto", "cuda")
    n = settings.actors or (gpus if use_gpus else 1)
    have = gpus if use_gpus else cpus
    if n < 1 or n > have:
        raise KlvizError(f"--actors {n} asks for {n} {'GPUs' if use_gpus else 'CPUs'}, "
                         f"but the Ray cluster has {have}.")
    if use_gpus:
        return n, {"num_gpus": 1, "num_cpus": 1}
    return n, {"num_cpus": max(1, cpus // n)}


def sized_pool(ray, settings: RaySettings, spec: PairSpec) -> tuple[int, dict, PairSpec]:
    """(actors, per-actor resources, the spec each actor loads): pool_resources, with a CPU actor's torch
    threads set to the CPUs Ray reserved for it (one for a GPU actor)."""
    n, resources = pool_resources(ray, settings, spec.device)
    return n, resources, replace(spec, threads=int(resources.get("num_cpus", 1)) if "num_gpus" not in resources else 1)


def run_units(ray, settings: RaySettings, spec: PairSpec, units: list, actor_cls=PairActor,
              work: ScoreWork | None = None) -> list:
    """Each unit through the actor pool (each actor given `work`, if any); results (and the pair's
    facts) in unit order."""
    n, resources, spec = sized_pool(ray, settings, spec)
    items = [{"unit": k, "payload": pickle.dumps(u)} for k, u in enumerate(units)]
    data = ray_data()
    ds = data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(actor_cls, fn_constructor_args=(spec,) if work is None else (spec, work), batch_size=1,
                        compute=data.ActorPoolStrategy(size=n),
                        max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES, **resources)
    return collect(ds.take_all(), len(units))


@contextlib.contextmanager
def actor_pool(ray, settings: RaySettings, spec: PairSpec, actor_cls=PairActor):
    """`run(units)` on one pool of actors that lives through several passes (Ray's core API:
    `ray.util.ActorPool` over `ray.remote(actor_cls)` actors): what `klviz analyze --ray` needs, whose
    scoring batches are cut from every sampled length, so its second pass can only start once the first
    has ended, and a Ray Data actor pool lives for one `map_batches` only. The actors are sized and
    restarted as in `run_units` (max_restarts, and max_task_retries: a dead actor's unit is retried on its
    restart), and killed on exit."""
    from ray.util import ActorPool

    n, resources, spec = sized_pool(ray, settings, spec)
    remote = ray.remote(actor_cls).options(max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES, **resources)
    actors = [remote.remote(spec) for _ in range(n)]

    def run(units: list) -> list:
        batches = [{"unit": [k], "payload": [pickle.dumps(u)]} for k, u in enumerate(units)]
        outputs = ActorPool(actors).map(lambda actor, batch: actor.run_batch.remote(batch), batches)
        return collect([{"unit": u, "result": r} for out in outputs for u, r in zip(out["unit"], out["result"])],
                       len(units))

    try:
        yield run
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):  # already gone with a failed run
                ray.kill(actor)


def collect(rows: list[dict], n_units: int) -> list:
    """The pool's output rows (PairActor.__call__'s "unit" and "result") as results in unit order; a
    KlvizError an actor met is raised here, the first in unit order; a missing unit is one sentence."""
    by_unit = {int(r["unit"]): pickle.loads(r["result"]) for r in rows}
    if sorted(by_unit) != list(range(n_units)):
        raise KlvizError(f"The Ray run returned {len(by_unit)} of {n_units} batches; nothing was written.")
    for value, _ in (by_unit[k] for k in range(n_units)):
        if isinstance(value, KlvizError):
            raise value
    return [by_unit[k] for k in range(n_units)]


def spec_from_args(args) -> PairSpec:
    """The actors' PairSpec from a score/analyze/trajectory Namespace (trajectory: the SFT model alone);
    every path is checked here first."""
    from klviz.sources import locate

    policy, policy_base = getattr(args, "policy", None), getattr(args, "policy_base", None)
    for source in (policy, args.sft, policy_base):
        if source is not None:
            locate(source)
    return PairSpec(policy=None if policy is None else str(policy), sft=str(args.sft),
                    policy_base=None if policy_base is None else str(policy_base),
                    device=args.device, dtype=args.dtype)


def settings_from_args(args) -> RaySettings:
    """RaySettings from --ray/--actors; Ray's absence is reported here, before any work."""
    require_ray()
    if args.actors is not None and args.actors < 1:
        raise KlvizError(f"--actors must be at least 1, got {args.actors}.")
    return RaySettings(address=args.ray or None, actors=args.actors)
