"""klviz.pairs.save_upload: each upload written once, under a safe name, inside its root."""

import io

import pytest

from klviz import pairs
from klviz.errors import KlvizError


def test_save_upload_writes_each_upload_once_under_a_safe_name(tmp_path):
    first = pairs.save_upload("my model (v2).zip", b"PK-bytes", tmp_path)
    again = pairs.save_upload("my model (v2).zip", io.BytesIO(b"PK-bytes"), tmp_path)
    assert first == again and first.name == "my_model__v2_.zip" and first.read_bytes() == b"PK-bytes"
    assert first.parent.parent == tmp_path
    assert pairs.save_upload("../../etc/evil.gguf", b"x", tmp_path).parent.parent == tmp_path
    with pytest.raises(KlvizError, match=r"notes\.txt is neither a \.zip .* nor a \.gguf file"):
        pairs.save_upload("notes.txt", b"x", tmp_path)
