"""Settings classes become a SamplingConfig by field name, as the field-by-field copies they replace did."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from klviz.engine.estimators import estimators
from klviz.errors import KlvizError
from klviz.sample.measure import MeasureSettings
from klviz.settings import ANALYSIS_BATCH, SamplingConfig, SamplingSettings


@pytest.mark.parametrize("settings", [SamplingSettings(), SamplingSettings("p.jsonl", 3, 2, 7, 0.5, 9, "both")])
def test_the_dashboard_settings_sample_with_their_own_fields_in_the_dashboard_batches(settings):
    want = SamplingConfig(samples_per_prompt=settings.samples_per_prompt, max_new_tokens=settings.max_new_tokens,
                          temperature=settings.temperature, seed=settings.seed, sample_from=settings.sample_from,
                          batch_size=ANALYSIS_BATCH)
    assert settings.config() == want


def test_measure_settings_sample_with_their_own_fields():
    s = MeasureSettings(samples_per_prompt=3, max_new_tokens=5, seed=2, batch_size=4, sample_from="sft")
    assert SamplingConfig.from_settings(s) == SamplingConfig(samples_per_prompt=3, max_new_tokens=5, seed=2,
                                                             batch_size=4, sample_from="sft")
    assert SamplingConfig.from_settings(s, seed=7) == replace(SamplingConfig.from_settings(s), seed=7)
    with pytest.raises(KlvizError):  # still validated
        SamplingConfig.from_settings(replace(s, sample_from="nobody"))


def test_estimators_agree_on_tensors_and_arrays_and_keep_gradients():
    r = np.linspace(-3, 3, 13)
    t = torch.tensor(r, requires_grad=True)
    for name, value in estimators(t).items():
        np.testing.assert_allclose(value.detach().numpy(), estimators(r)[name], rtol=1e-15, atol=0)
    estimators(t)["k3"].sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 1 - np.exp(-r), rtol=1e-12, atol=1e-15)  # d/dr (e^-r - 1 + r)
