"""The CPULLM_* registry: every variable the engine reads is a row; a misspelt one gets a warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cpullm import env
from cpullm.server import settings

ENGINE = Path(env.__file__).parent


def test_a_misspelt_variable_is_named_with_its_close_match():
    environ = {"CPULLM_THRAEDS": "2", "CPULLM_ISA": "avx2", "PATH": "/bin", "CPULLM_PORT": "80"}
    warnings = env.unknown(environ, also_known=settings.env_names())
    assert warnings == ["CPULLM_THRAEDS is set but cpullm does not read it; did you mean CPULLM_THREADS?"]


def test_a_variable_far_from_every_name_lists_the_known_ones():
    (warning,) = env.unknown({"CPULLM_ZZZ": "1"})
    assert "CPULLM_ZZZ" in warning and "known: CPULLM_CACHE_DIR" in warning


def test_get_reads_only_registered_variables_and_treats_empty_as_unset():
    assert env.get("CPULLM_THREADS", {"CPULLM_THREADS": ""}) is None
    assert env.get("CPULLM_THREADS", {"CPULLM_THREADS": "3"}) == "3"
    with pytest.raises(KeyError):
        env.get("CPULLM_NOT_A_SETTING", {})


def test_every_variable_the_engine_names_is_registered():
    """A CPULLM_* name in the engine's code that no registry knows would be read without the warning."""
    known = {*env.SETTINGS, *settings.env_names()}
    named = set()
    for path in ENGINE.rglob("*.py"):
        named |= set(re.findall(r"\bCPULLM_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    assert named - known == set()


def test_the_command_warns_on_stderr_and_still_runs(tmp_path):
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ENGINE.parent), "CPULLM_THRAEDS": "2"}
    done = subprocess.run([sys.executable, "-m", "cpullm", "--version"], capture_output=True, text=True,
                          env=environ, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0
    assert "did you mean CPULLM_THREADS?" not in done.stderr  # argparse's --version exits before the check
    done = subprocess.run([sys.executable, "-m", "cpullm", "info", "--json"], capture_output=True, text=True,
                          env=environ, cwd=tmp_path)  # fmt: skip
    assert "cpullm: warning: CPULLM_THRAEDS is set but cpullm does not read it" in done.stderr
