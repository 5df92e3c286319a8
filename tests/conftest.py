"""Suite-wide fixtures, and the order the test files run in."""

from pathlib import Path

import pytest

HEAVY_FILES = {
    # Seconds per file in the full runs on the 2-core box (`pytest --durations`, two workers; 538-594 s
    # wall), adjusted for the tests trimmed since. Only their order matters (see
    # pytest_collection_modifyitems); a file not listed runs after these, in collection order.
    "tests/integration/test_ray.py": 190,
    "tests/integration/test_ppo_sample.py": 175,
    "tests/e2e/test_browser.py": 112,
    "tests/app/test_live_ppo.py": 80,
    "tests/integration/test_smollm2.py": 61,
    "tests/app/test_pages.py": 38,
    "tests/app/test_responses_file.py": 24,
    "tests/integration/test_sample_data.py": 18,
    "tests/app/test_open_table.py": 17,
    "tests/e2e/test_trajectory_click.py": 14,
    "tests/integration/test_job_threads.py": 13,
    "tests/integration/test_ppo_jobs.py": 11,
    "tests/integration/test_analysis_job.py": 11,
    "tests/integration/test_workers.py": 8,
}
ROOT = Path(__file__).resolve().parents[1]


def _file_weight(item) -> int:
    try:
        return HEAVY_FILES.get(Path(item.path).resolve().relative_to(ROOT).as_posix(), 0)
    except ValueError:
        return 0


def pytest_collection_modifyitems(items):
    """Longest files first, each file's tests kept in their order. pytest-xdist's `--dist loadfile` hands
    whole files to the two workers in collection order (with --no-loadscope-reorder; by default it sorts
    files by their number of tests, which put the few-but-long files last, so one worker finished a
    long file alone while the other idled). Longest first is the classic LPT schedule (Graham 1969):
    the short files fill in at the end and both workers finish close together."""
    items.sort(key=lambda item: -_file_weight(item))  # stable: ties keep collection order


@pytest.fixture(scope="session", autouse=True)
def _session_model_cache(tmp_path_factory):
    """Tests never write the user's model cache (klviz.model_cache): the zips and GGUFs they load are
    dequantized into a folder of this session. tests/integration/test_smollm2.py opts back in to the
    user's cache for the real GGUF, so its minute of dequantization is paid once per machine."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KLVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("klviz-cache")))
    yield
    mp.undo()
