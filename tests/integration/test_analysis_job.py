"""Sampling + scoring in a worker process (klviz.analysis_job): the same table as in-process, with progress."""

import pandas as pd

from klviz.analysis_job import AnalysisJob, PairSpec
from klviz.models import load_pair
from klviz.prompts import Prompt
from klviz.sampling import settings_table
from klviz.settings import SamplingSettings
from tests.helpers.tiny import save_pair, torch_threads

PROMPTS = [Prompt(id="0", text="the food was"), Prompt(id="1", text="staff")]
SETTINGS = SamplingSettings(samples_per_prompt=2, max_new_tokens=5, sample_from="both")


def test_worker_table_equals_the_in_process_table(tmp_path, monkeypatch):
    from klviz import analysis_job

    policy, sft = save_pair(tmp_path, kind="gpt2")
    seen = []  # every progress message's stage (a warm worker passes them faster than any poll)
    on_message = analysis_job._Progress.on_message

    def record(self, message):
        if message[0] == "progress":
            seen.append(message[2])
        on_message(self, message)

    monkeypatch.setattr(analysis_job._Progress, "on_message", record)
    probed = []
    job = AnalysisJob(PairSpec(str(policy), str(sft), device="cpu"), PROMPTS, SETTINGS, nice=0,
                      on_probe=probed.append).start()
    assert job.join(timeout=120)
    snap = job.snapshot()
    assert snap.state == "done" and snap.error is None and snap.fraction == 1.0
    # before sampling, the worker timed the SFT model's forward (Live PPO's estimate), once
    assert len(probed) == 1 and 0 < probed[0] == snap.seconds_per_token < 1
    assert seen[0] == "loading the pair" and {"sampling (policy)", "sampling (sft)", "scoring"} <= set(seen), seen
    with torch_threads(1):
        expected = settings_table(load_pair(str(policy), str(sft), device="cpu"), PROMPTS, SETTINGS)
    pd.testing.assert_frame_equal(snap.table, expected)


def test_worker_error_is_one_sentence(tmp_path):
    job = AnalysisJob(PairSpec(str(tmp_path / "nope"), str(tmp_path / "nope")), PROMPTS, SETTINGS, nice=0).start()
    assert job.join(timeout=120)
    snap = job.snapshot()
    assert snap.state == "error" and snap.table is None and "\n" not in snap.error and "nope" in snap.error
