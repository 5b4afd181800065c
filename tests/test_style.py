"""The style the scripts promise (issue 16), held by the suite rather than by a reviewer: ruff format and ruff check
(ruff.toml: 120 columns, rules E, F, W) of the six scripts and ppd_tools/."""

import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = [
    "train_teacher.py",
    "ppd_mujoco.py",
    "ppd_atari.py",
    "ppd_procgen.py",
    "student_distill.py",
    "teacher_distill.py",
]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "check"])
def test_ruff_is_clean(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *SCRIPTS, "ppd_tools"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
