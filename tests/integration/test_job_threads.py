"""JobRegistry shares the cores among running PPO jobs: one run alone trains on all of them, two on
two cores one each, and a job that ends gives its share back (klviz.ppo.jobs.share_threads)."""

from klviz.ppo.jobs import JobRegistry, share_threads
from tests.integration.test_ppo_jobs import PROMPTS, SPAWN_TIMEOUT_S, STEPS_NEVER_REACHED, _wait, small_cfg
from tests.integration.test_ppo_jobs import sft_dir  # noqa: F401  (the module's fixture)


def test_share_threads_gives_each_running_job_an_equal_share_and_never_none():
    assert [share_threads(2, n) for n in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert [share_threads(16, n) for n in (1, 2, 3, 4)] == [16, 8, 5, 4]
    assert share_threads(1, 1) == 1


def test_the_registry_moves_threads_to_the_jobs_still_running(sft_dir):  # noqa: F811
    registry = JobRegistry(max_jobs=2, cores=2)
    cfg = small_cfg(steps=STEPS_NEVER_REACHED)
    a = registry.start("a", sft_dir, PROMPTS, cfg, nice=0)
    try:
        _wait(a, lambda s: s.step >= 1 and s.threads == 2)  # alone: both cores
        light = a.snapshot(history=False)  # what the page's status poll reads: no per-step copies
        assert light.step >= 1 and light.metrics == [] == light.bands and light.threads == 2
        b = registry.start("b", sft_dir, PROMPTS, cfg, nice=0)
        try:
            _wait(b, lambda s: s.threads == 1)  # started with its share
            _wait(a, lambda s: s.threads == 1)  # and a gave one core up, between two of its steps
        finally:
            registry.stop("b")
            assert b.join(timeout=SPAWN_TIMEOUT_S)
        _wait(a, lambda s: s.threads == 2 and s.state == "running")  # b ended: a has both again
    finally:
        registry.stop("a")
        assert a.join(timeout=SPAWN_TIMEOUT_S)
