"""A weight file published in parts (voice/gateway/weights.py joined_verified)."""

import hashlib

import pytest

from voice.errors import ConfigError
from voice.gateway import weights

PARTS = {("dist-a", "a.bin"): b"GGUF" + b"a" * 1000, ("dist-b", "b.bin"): b"b" * 777}


@pytest.fixture(autouse=True)
def parts(monkeypatch):
    monkeypatch.setattr(weights, "read_verified", lambda dist, file: PARTS[(dist, file)])


def joined(sha256):
    return weights.JoinedFile("model.gguf", tuple(PARTS), sha256)


def test_the_parts_join_into_one_file_a_path_can_open():
    whole = b"".join(PARTS.values())
    with weights.joined_verified(joined(hashlib.sha256(whole).hexdigest())) as f:
        with open(f"/proc/self/fd/{f.fileno()}", "rb") as by_path:
            assert by_path.read() == whole


def test_parts_that_join_into_another_file_are_refused():
    with pytest.raises(ConfigError, match=r"model.gguf joined from its parts has sha256"):
        weights.joined_verified(joined("0" * 64))


def test_the_shipped_model_is_recorded_part_by_part():
    for part in weights.LLM_GGUF.parts:
        assert part in weights.WEIGHTS
