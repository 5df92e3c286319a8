"""LoRA training for the mini PPO: the policy is the SFT model plus a low-rank adapter, and the
reference is the same weights with the adapter switched off, so no second copy of the model exists.

peft's LoRA (Hu et al. 2021) on every linear layer but the output head ("all-linear", peft's
LoraConfig docs), B initialised to zero so the policy starts equal to the reference (ratio 1 and
KL 0 before the first update, as with a full copy). Only the adapter (and the value head) train,
so the optimizer state is a few MB instead of twice the model.
"""

from __future__ import annotations

import contextlib
import copy

from klviz.errors import KlvizError

LORA_ALPHA_PER_RANK = 2
"""lora_alpha = 2 x rank: the adapter's scale alpha/r is 2 whatever the rank (a common choice)."""


def lora_config(rank: int):
    """The peft LoraConfig klviz trains with (bench/ppo.py gives TRL the same one)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=LORA_ALPHA_PER_RANK * rank, lora_dropout=0.0,
                      target_modules="all-linear", init_lora_weights=True)


def attach_lora(model, rank: int):
    """Inject a rank-`rank` LoRA adapter into `model` in place; returns the PeftModel around it."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(rank))
    except (ValueError, TypeError) as e:
        raise KlvizError(f"LoRA cannot be applied to this {type(model).__name__} model ({e}): "
                         "train without --lora-rank.") from None


def reference_mode(peft_model):
    """A context in which the model computes the reference: the base weights, adapter off."""
    return peft_model.disable_adapter() if peft_model is not None else contextlib.nullcontext()


def merged_copy(peft_model):
    """A plain transformers model of base + adapter (merge_and_unload on a copy: training goes on)."""
    return copy.deepcopy(peft_model).merge_and_unload()
