"""scripts/install, as scripts/serve and scripts/test run it on every start: pip runs when
the virtualenv is new or what it was installed from changed, and not otherwise.

Run from a copy of the checkout's pyproject.toml and script, so the test can change them;
the virtualenv's interpreter is a stand-in that records what it was asked to run (a real
install downloads hundreds of megabytes), and can be told to fail as pip would."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$PIP_LOG"
if [ -n "$PIP_FAILS" ]; then exit 1; fi
"""


def checkout(tmp_path):
    tree = tmp_path / "checkout"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install", tree / "scripts" / "install")
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tree


def install(tree, extras="local", **env):
    """Run the script; returns the pip commands it ran."""
    log = tree.parent / "pip.log"
    log.unlink(missing_ok=True)
    environ = {**os.environ, "VOICE_VENV": str(tree.parent / "venv"), "PIP_LOG": str(log)}
    done = subprocess.run(
        [str(tree / "scripts" / "install"), extras],
        env=environ | env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    ran = log.read_text().splitlines() if log.exists() else []
    return done.returncode, ran


def test_pip_runs_only_when_the_environment_or_pyproject_changed(tmp_path):
    tree = checkout(tmp_path)
    status, ran = install(tree)
    assert status == 0
    assert "-m pip install -q -e .[local]" in ran and len(ran) == 2  # pip, then voice
    # The next start installs nothing.
    assert install(tree) == (0, [])
    # Other extras are their own install; then both are current.
    status, ran = install(tree, "local,dev")
    assert "-m pip install -q -e .[local,dev]" in ran
    assert install(tree, "local,dev") == (0, []) and install(tree) == (0, [])
    # pyproject.toml changed (a new dependency): install again, once.
    with (tree / "pyproject.toml").open("a") as f:
        f.write("\n# a change\n")
    assert install(tree)[1]
    assert install(tree) == (0, [])
    # And on request.
    assert install(tree, VOICE_REINSTALL="1")[1]


def test_an_install_that_failed_is_tried_again_on_the_next_start(tmp_path):
    tree = checkout(tmp_path)
    status, ran = install(tree, PIP_FAILS="1")
    assert status != 0 and ran
    status, ran = install(tree)
    assert status == 0 and "-m pip install -q -e .[local]" in ran
