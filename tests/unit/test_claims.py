"""klviz.lab.claims: every required id present with a computed bool verdict, the verdicts the math dictates,
plain JSON, and verdicts that follow the computation (a broken formula flips them)."""

import json

import numpy as np
import pytest

from klviz.lab import claims, toy

REQUIRED = {
    "k1_in_reward_grad_is_reverse_kl_grad", "k1_as_loss_grad_is_zero", "k2_as_loss_grad_is_reverse_kl_grad",
    "k3_as_loss_grad_is_forward_kl_grad", "k3_in_reward_grad_is_unbiased", "k3_is_unbiased_for_reverse_kl",
    "k2_is_unbiased_for_reverse_kl", "article_bound_forward_to_reverse",
    "article_reverse_kl_penalizes_gained_low_prob_mass", "article_forward_kl_penalizes_lost_high_prob_mass",
}
# What exact computation says (derivations in klviz/lab/toy.py's docstrings and tests/unit/test_toy.py).
EXPECTED = {
    "k1_in_reward_grad_is_reverse_kl_grad": True,
    "k1_as_loss_grad_is_zero": True,
    "k2_as_loss_grad_is_reverse_kl_grad": True,
    "k3_as_loss_grad_is_forward_kl_grad": True,
    "k3_in_reward_grad_is_unbiased": False,  # it is grad KL(pi||ref) - grad KL(ref||pi)
    "k3_in_reward_grad_is_reverse_minus_forward_kl_grad": True,
    "k3_is_unbiased_for_reverse_kl": True,
    "k2_is_unbiased_for_reverse_kl": False,
    "log_ratio_mean_converges_to_kl": True,
    "k1_single_sample_can_be_negative": True,
    "k3_single_sample_is_nonnegative": True,
    "article_bound_forward_to_reverse": True,
    "article_reverse_kl_penalizes_gained_low_prob_mass": True,
    "article_forward_kl_penalizes_lost_high_prob_mass": True,
    "reverse_optimum_drops_reference_modes": True,
    "forward_optimum_covers_reference_modes": True,
}


@pytest.fixture(scope="module")
def found():
    return claims.evaluate_claims(seed=0)


def test_required_ids_present_with_bool_verdicts(found):
    ids = [c.id for c in found]
    assert len(ids) == len(set(ids))
    assert REQUIRED <= set(ids)
    assert all(type(c.holds) is bool and c.statement and c.evidence for c in found)


def test_verdicts_are_what_the_math_says(found):
    assert {c.id: c.holds for c in found} == EXPECTED


def test_verdicts_do_not_depend_on_the_seed(found):
    assert {c.id: c.holds for c in claims.evaluate_claims(seed=1)} == {c.id: c.holds for c in found}


def test_json_is_plain_and_round_trips(found):
    text = claims.claims_to_json(found)
    data = json.loads(text)
    assert json.dumps(data, allow_nan=False)  # strict JSON: no NaN or inf anywhere
    assert [set(d) for d in data] == [{"id", "statement", "holds", "evidence"}] * len(found)
    assert [d["id"] for d in data] == [c.id for c in found]
    assert claims.claims_to_json(claims.evaluate_claims(seed=0)) == text  # deterministic


def test_format_claims_names_every_claim_and_verdict(found):
    text = claims.format_claims(found)
    for c in found:
        assert f"[{'holds' if c.holds else 'does not hold'}] {c.id}" in text
    held = sum(c.holds for c in found)
    assert text.splitlines()[-1] == f"{len(found)} claims: {held} hold, {len(found) - held} do not."


def test_evidence_carries_the_deciding_numbers(found):
    by_id = {c.id: c for c in found}
    assert by_id["k1_in_reward_grad_is_reverse_kl_grad"].evidence["max_rel_error"] < 1e-12
    assert by_id["k3_in_reward_grad_is_unbiased"].evidence["min_rel_error"] > 0.1
    assert by_id["k2_is_unbiased_for_reverse_kl"].evidence["max_abs_rel_bias"] > 0.1
    bound = by_id["article_bound_forward_to_reverse"].evidence
    assert 0.49 < bound["max_ratio"] <= 1.0 and "counterexample" not in bound
    rev = by_id["article_reverse_kl_penalizes_gained_low_prob_mass"].evidence
    assert rev["kl_gained_case"][-1] > 10 * rev["kl_lost_case"][-1]


def test_a_broken_gradient_flips_its_verdict(monkeypatch):
    monkeypatch.setattr(toy, "grad_kl_forward", lambda pi, ref: ref - pi)  # wrong sign
    by_id = {c.id: c.holds for c in claims.evaluate_claims(seed=0)}
    assert by_id["k3_as_loss_grad_is_forward_kl_grad"] is False
    assert by_id["k1_in_reward_grad_is_reverse_kl_grad"] is True


def test_a_found_counterexample_flips_the_bound(monkeypatch):
    fake = toy.BoundSearch(1.5, np.array([0.5, 0.5]), np.array([0.9, 0.1]), 1)
    monkeypatch.setattr(toy, "search_bound_worst_case", lambda rng: fake)
    bound = {c.id: c for c in claims.evaluate_claims(seed=0)}["article_bound_forward_to_reverse"]
    assert bound.holds is False and bound.evidence["counterexample"]["new"] == [0.9, 0.1]
