"""Sampling settings: `SamplingConfig` (how responses are sampled, the only home of its fields and
defaults) and the dashboard's `SamplingSettings`. No torch or pandas import: the dashboard's first
view reads these before either has loaded (tests/integration/test_warm_table.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from klviz.errors import KlvizError

SOURCES = ("policy", "sft", "both")


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled. Validated on construction."""

    samples_per_prompt: int = 4
    """Responses per prompt and per sampling model."""
    max_new_tokens: int = 64
    """Most tokens per response; a response also ends at EOS (which is not kept)."""
    temperature: float = 1.0
    """Softmax temperature; 1.0 samples the model's own distribution, 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much mass; 1.0 keeps all."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    seed: int = 0
    """Seed of every batch's sampling; the same seed and settings give the same responses."""
    sample_from: str = "policy"
    """Which model writes the responses: "policy", "sft" or "both" (the `source` column says which)."""
    batch_size: int = 16
    """Sequences per generate (and scoring) batch; only memory and speed depend on it."""

    def __post_init__(self):
        for name in ("samples_per_prompt", "max_new_tokens", "batch_size", "top_k", "seed"):
            value = getattr(self, name)
            low = 0 if name in ("top_k", "seed") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise KlvizError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 100:
            raise KlvizError(f"temperature must be between 0 (greedy) and 100, got {self.temperature!r}.")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise KlvizError(f"top_p must be in (0, 1], got {self.top_p!r}.")
        if self.sample_from not in SOURCES:
            raise KlvizError(f"sample_from must be one of {', '.join(SOURCES)}, got {self.sample_from!r}.")

    @classmethod
    def from_settings(cls, settings, **overrides) -> SamplingConfig:
        """The config named by the dataclass `settings`: each of its fields that is a field here (by
        name, so a settings class declares only what it changes), then `overrides`; the rest default."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in asdict(settings).items() if k in names}, **overrides})


DEFAULT_PROMPTS = "sample_data/prompts.jsonl"
# 24 new tokens: the sample reviews are 10-40 tokens, and a live analysis of the sample pair at 24
# takes about a second on 2 CPU cores (bench/RESULTS.md).
DEFAULT_MAX_NEW_TOKENS = 24
# On a CPU few large generate/score batches beat many small ones (bench/RESULTS.md).
ANALYSIS_BATCH = 64
TOP_K = 10  # top-k gained and lost tokens per position in the dashboard's tables


@dataclass(frozen=True)
class SamplingSettings:
    """The sidebar's sampling settings (every field keys the analysis cache and the shipped view's key).

    The sampling fields are SamplingConfig's, with its defaults except max_new_tokens;
    `config()` turns them into the SamplingConfig the dashboard samples with.
    """

    prompts: str = DEFAULT_PROMPTS
    """The prompts file, as typed in the sidebar."""
    n_prompts: int = 0
    """How many of its prompts are used; 0: all."""
    samples_per_prompt: int = SamplingConfig.samples_per_prompt
    """SamplingConfig.samples_per_prompt."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """SamplingConfig.max_new_tokens (shorter than its default: see DEFAULT_MAX_NEW_TOKENS)."""
    temperature: float = SamplingConfig.temperature
    """SamplingConfig.temperature."""
    seed: int = SamplingConfig.seed
    """SamplingConfig.seed."""
    sample_from: str = SamplingConfig.sample_from
    """SamplingConfig.sample_from."""

    def config(self) -> SamplingConfig:
        """The SamplingConfig of these settings, in the dashboard's batches."""
        return SamplingConfig.from_settings(self, batch_size=ANALYSIS_BATCH)
