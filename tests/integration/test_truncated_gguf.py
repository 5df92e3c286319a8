"""A GGUF file cut inside its header is one sentence naming the file, not a struct.error traceback."""

import pytest

from klviz.errors import KlvizError
from klviz.models import load_model
from tests.helpers.tiny import make_tiny_model, make_tokenizer, write_gguf_llama


@pytest.mark.parametrize("cut", [24, 40])
def test_truncated_gguf_header_is_a_klviz_error(tmp_path, cut):
    pytest.importorskip("gguf")
    tok = make_tokenizer()
    whole = write_gguf_llama(make_tiny_model("llama", len(tok)), tok, tmp_path / "whole.gguf").read_bytes()
    assert whole[:4] == b"GGUF" and int.from_bytes(whole[4:8], "little") == 3  # a v3 header, cut below
    cut_file = tmp_path / "cut.gguf"
    cut_file.write_bytes(whole[:cut])
    with pytest.raises(KlvizError) as e:
        load_model(str(cut_file), device="cpu")
    assert "cut.gguf" in str(e.value) and "\n" not in str(e.value)
