"""The style the scripts promise (issue 16), held by the suite rather than by a reviewer: ruff format and ruff check
(ruff.toml: 120 columns, rules E, F, W) of the six scripts and ppd_tools/, and no drift between the copies of a function
that does the same job in several scripts."""

import ast
import functools
import os
import re
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
    "load_checkpoint",
    "make_atari_envs",
    "minibatch_split",
    "space_dict",
    "stop_if_not_finite",
    "teacher_weights",
    "time_limit_of",
]


# the same job in some scripts and another in the rest (an MLP Actor and a pixel one; the baselines' RunningMeanStd,
# frozen): one text within each group. A function that PPD adds carries `# PPD` in a PPD script and not in a
# baseline, so the tags are left out of this comparison.
MLP = ["train_teacher.py", "ppd_mujoco.py", "student_distill.py", "teacher_distill.py"]
PIXEL_PPD = ["ppd_atari.py", "ppd_procgen.py"]
PPD = ["ppd_mujoco.py"] + PIXEL_PPD
BASELINES = ["student_distill.py", "teacher_distill.py"]
SAME_TEXT_WITHIN = {
    "Actor": [MLP, PIXEL_PPD],
    "AtariEnvs": [["train_teacher.py", "ppd_atari.py"] + BASELINES],
    "ProcgenVecEnv": [["train_teacher.py", "ppd_procgen.py"] + BASELINES],
    "RunningMeanStd": [["train_teacher.py", "ppd_mujoco.py"], PIXEL_PPD, BASELINES],
    "add_teacher_noise": [PPD + BASELINES],
    "agent_from_checkpoint": [["train_teacher.py"] + BASELINES, PPD],
    "check_env_id": [["train_teacher.py"] + BASELINES],
    "dist_params": [["ppd_mujoco.py"] + BASELINES],
    "env_state": [["train_teacher.py"] + BASELINES],
    "greedy_action": [MLP],
    "kl_divergence": [["ppd_mujoco.py"] + BASELINES, PIXEL_PPD],
    "make_mlp_envs": [["train_teacher.py"] + BASELINES],
    "mlp": [["ppd_mujoco.py"] + BASELINES],
    "prepare_run": [["train_teacher.py"] + BASELINES, PPD],
    "refuse_foreign_teachers": [PPD + BASELINES],
    "set_env_state": [["train_teacher.py"] + BASELINES],
    "space_from_dict": [MLP, PIXEL_PPD],
}


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


@pytest.mark.parametrize("name", sorted(SAME_TEXT_WITHIN))
def test_copies_within_a_group_are_the_same_text_but_for_the_ppd_tags(name):
    for group in SAME_TEXT_WITHIN[name]:
        copies = {script: re.sub(r"\s*# PPD$", "", definitions(script)[name], flags=re.M) for script in group}
        drifted = [script for script, text in copies.items() if text != copies[group[0]]]
        assert not drifted, f"{name} in {drifted} differs from {group[0]}'s copy"
