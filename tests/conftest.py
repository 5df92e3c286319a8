"""Suite-wide fixtures."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_model_cache(tmp_path_factory):
    """Tests never write the user's model cache (klviz.model_cache): the zips and GGUFs they load are
    dequantized into a folder of this session. tests/integration/test_smollm2.py opts back in to the
    user's cache for the real GGUF, so its minute of dequantization is paid once per machine."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KLVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("klviz-cache")))
    yield
    mp.undo()
