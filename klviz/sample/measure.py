"""What the sample policies show, measured with klviz's own engine (the same path as `klviz analyze`).

For each policy folder: sample responses from the policy and from the SFT model on the sample
prompts (klviz.sampling.analyze, sample_from="both"), score them (klviz.engine.divergence.score), then
  - reward: the `sentiment` reward, sentiment_score(prompt + response), mean over responses;
  - kl_reverse per token: mean over the policy's own response tokens of the exact
    KL(policy || SFT) = sum_v pi(v|c_t) log(pi(v|c_t) / pi_sft(v|c_t));
  - kl_reverse per sequence: that sum over each response's tokens, mean over responses;
  - kl_forward likewise, KL(SFT || policy) = sum_v pi_sft(v|c_t) log(pi_sft(v|c_t) / pi(v|c_t)).
MEASURE_SETTINGS are the `klviz analyze` flags that reproduce the figures exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from klviz.ppo.lexicon import sentiment_score


@dataclass(frozen=True)
class MeasureSettings:
    """Sampling for the sample data's figures; the defaults equal these `klviz analyze` flags."""

    samples_per_prompt: int = 8
    """--samples-per-prompt"""
    max_new_tokens: int = 16
    """--max-new-tokens (the PPO runs' response cap)"""
    seed: int = 0
    """--seed"""
    batch_size: int = 8
    """--batch-size (the CLI default; sampling seeds are per batch, so it must match)"""
    sample_from: str = "both"
    """--sample-from: the policy's responses and, for the baseline reward, the SFT model's"""

    def flags(self) -> str:
        """The same settings as `klviz analyze` command-line flags."""
        return (f"--samples-per-prompt {self.samples_per_prompt} --max-new-tokens {self.max_new_tokens} "
                f"--seed {self.seed} --batch-size {self.batch_size} --sample-from {self.sample_from} "
                "--device cpu --dtype float32")


MEASURE_SETTINGS = MeasureSettings()
MIN_TOKEN_COUNT = 5
"""A token enters the most-gained / most-lost lists only if the policy sampled it this often."""
TOP_TOKENS = 6
"""Length of the most-gained / most-lost lists."""


def moved_tokens(policy_tokens: pd.DataFrame) -> dict[str, list[dict]]:
    """Tokens of the policy's responses by mean log_ratio = log pi(y_t) - log pi_sft(y_t).

    "gained": what the policy now says far more readily than the SFT model would in the same
    context; "lost": what it still says, but less readily. Both among tokens sampled at least
    MIN_TOKEN_COUNT times.
    """
    by_token = policy_tokens.groupby("token")["log_ratio"].agg(["mean", "count"])
    by_token = by_token[by_token["count"] >= MIN_TOKEN_COUNT].sort_values("mean")

    def rows(frame: pd.DataFrame) -> list[dict]:
        return [{"token": t, "log_ratio": float(r["mean"]), "count": int(r["count"])} for t, r in frame.iterrows()]

    gained = by_token[by_token["mean"] > 0].iloc[::-1].head(TOP_TOKENS)
    lost = by_token[by_token["mean"] < 0].head(TOP_TOKENS)
    return {"gained": rows(gained), "lost": rows(lost)}


def response_rewards(table: pd.DataFrame, prompts: dict[str, str], tokenizer) -> pd.DataFrame:
    """One row per (source, prompt_id, sample_id): the decoded response and its sentiment reward."""
    rows = []
    keys = ["source", "prompt_id", "sample_id"]
    for (source, prompt_id, sample_id), g in table.sort_values("position").groupby(keys, sort=True):
        text = tokenizer.decode(g["token_id"].tolist(), skip_special_tokens=True)
        rows.append({"source": source, "prompt_id": prompt_id, "sample_id": sample_id, "response": text,
                     "reward": sentiment_score(prompts[prompt_id] + text),
                     "kl_reverse_seq": g["kl_reverse"].sum(), "kl_forward_seq": g["kl_forward"].sum(),
                     "tokens": len(g)})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, prompts: dict[str, str], tokenizer) -> dict:
    """The figures of one policy's token table (from analyze with sample_from="both")."""
    per_response = response_rewards(table, prompts, tokenizer)
    out = {}
    for source in ("policy", "sft"):
        tokens = table[table["source"] == source]
        seqs = per_response[per_response["source"] == source]
        out[source] = {
            "responses": len(seqs),
            "reward_mean": float(seqs["reward"].mean()),
            "kl_reverse_per_token": float(tokens["kl_reverse"].mean()),
            "kl_reverse_per_sequence": float(seqs["kl_reverse_seq"].mean()),
            "kl_forward_per_token": float(tokens["kl_forward"].mean()),
            "kl_forward_per_sequence": float(seqs["kl_forward_seq"].mean()),
            "tokens_per_response": float(seqs["tokens"].mean()),
        }
    out["tokens"] = moved_tokens(table[table["source"] == "policy"])
    out["examples"] = (per_response[per_response["source"] == "policy"]
                       .drop_duplicates("prompt_id").head(6)[["prompt_id", "response", "reward"]]
                       .to_dict("records"))
    return out


def measure(folder: Path, policy: str, settings: MeasureSettings = MEASURE_SETTINGS) -> dict:
    """Figures for folder/<policy> against folder/sft on folder/prompts.jsonl."""
    from klviz.models import load_pair
    from klviz.prompts import read_prompts
    from klviz.sampling import analyze
    from klviz.settings import SamplingConfig

    prompts = read_prompts(folder / "prompts.jsonl")
    pair = load_pair(folder / policy, folder / "sft", device="cpu", dtype="float32")
    table = analyze(pair, prompts, SamplingConfig.from_settings(settings), progress=False)
    return summarize(table, {p.id: p.text for p in prompts}, pair.tokenizer)
