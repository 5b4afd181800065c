"""The style the scripts promise (issue 16), held by the suite rather than by a reviewer: ruff format and ruff check
(ruff.toml: 120 columns, rules E, F, W) of the six scripts and ppd_tools/, and no drift between the copies of a function
that does the same job in several scripts."""

import ast
import functools
import os
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


# functions and classes that do the same job wherever they appear: one text in every script that has them (each
# script is whole on its own, so the code is copied; a fix made in one copy and not the others is drift)
SAME_TEXT = [
    "ImpalaCNN",
    "MassRandomization",
    "NatureCNN",
    "NonFiniteLoss",
    "ResidualBlock",
    "UsageError",
    "atari_game",
    "atomic_save",
    "check_fits_env",
    "check_mass_options",
    "check_ranges",
    "compute_gae",
    "detect_domain",
    "distill_coef_at",
    "distill_update",
    "eval_levels",
    "eval_summary",
    "fail",
    "human_normalized",
    "layer_init",
    "make_atari_envs",
    "minibatch_split",
    "space_dict",
    "stop_if_not_finite",
    "teacher_weights",
    "time_limit_of",
]


@functools.cache
def definitions(script: str) -> dict:
    with open(os.path.join(REPO, script)) as f:
        src = f.read()
    return {n.name: ast.get_source_segment(src, n) for n in ast.parse(src).body if hasattr(n, "name")}


@pytest.mark.parametrize("name", SAME_TEXT)
def test_copies_of_a_shared_function_are_the_same_text(name):
    copies = {script: text for script in SCRIPTS if (text := definitions(script).get(name)) is not None}
    assert len(copies) >= 2, f"{name} is in {list(copies)} only"
    first = next(iter(copies))
    drifted = [script for script, text in copies.items() if text != copies[first]]
    assert not drifted, f"{name} in {drifted} differs from {first}'s copy"
