"""ppd_mujoco.py's `# PPD` markers are exact (issue 16): every line PPD adds to PPO ends in `# PPD` and no other
line does, so `grep -v "# PPD$" ppd_mujoco.py` is a working plain-PPO script, train_teacher.py's number for number,
and `diff <(grep -v "# PPD$" ppd_mujoco.py) ppd_mujoco.py` is the whole method."""

import io
import json
import os
import subprocess
import sys
import tokenize

import pytest
import torch

from conftest import REPO, run_script, script_env

TAG = "# PPD"
# both scripts' flags where their defaults differ (train_teacher.py: the paper's teacher settings; ppd_mujoco.py: the
# student's, paper A.3), given explicitly: num-steps, gamma (CartPole) and ent-coef
TINY = ["--num-envs", "2", "--num-steps", "64", "--minibatch-size", "64", "--total-timesteps", "256",
        "--eval-episodes", "2", "--seed", "3", "--ent-coef", "0.0", "--no-cuda"]


def source() -> str:
    with open(os.path.join(REPO, "ppd_mujoco.py")) as f:
        return f.read()


def stripped() -> str:
    """What `grep -v "# PPD$" ppd_mujoco.py` writes."""
    return "".join(line for line in source().splitlines(keepends=True) if not line.rstrip("\n").endswith(TAG))


def same_parameters(a: dict, b: dict) -> bool:
    return a["actor"].keys() == b["actor"].keys() and all(
        torch.equal(a[part][k], b[part][k]) for part in ("actor", "critic") for k in a[part])


# one env (the default, Hopper-v5: continuous actions, observation normalization); discrete actions and the
# PPD script itself at lambda 0 are tests/test_ppd_mujoco.py::test_lambda_zero_reproduces_ppo_exactly
# and on envpool's envs (issue 19), the backend one flag away
@pytest.mark.parametrize("env_id, gamma, backend", [(None, "0.995", "gymnasium"), (None, "0.995", "envpool")])
def test_stripped_script_is_train_teachers_ppo_bit_for_bit(tmp_path, env_id, gamma, backend):
    script = tmp_path / "ppo.py"
    script.write_text(stripped())
    env = {k: v for k, v in script_env().items() if k != "PYTHONPATH"}  # alone in its folder: no repository import
    if backend == "envpool":  # ... but for the backend that lives in ppd_tools/, imported only for that feature
        env["PYTHONPATH"] = REPO
    flags = TINY + ["--gamma", gamma, "--env-backend", backend, "--output-dir", str(tmp_path)]
    ppo = subprocess.run([sys.executable, str(script), *(["--env-id", env_id] if env_id else []), "--run-name", "ppo",
                          *flags], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ppo.returncode == 0, ppo.stderr
    assert "teacher" not in ppo.stdout
    ref = run_script("train_teacher.py", "--env-id", env_id or "Hopper-v5", "--run-name", "ref", *flags)
    assert ref.returncode == 0, ref.stderr
    a, b = (torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("ppo", "ref"))
    assert a["env_id"] == b["env_id"] == (env_id or "Hopper-v5")
    assert same_parameters(a, b)
    for key in ("mean", "var"):  # its own running observation normalization, updated as train_teacher.py's
        assert torch.equal(a["obs_rms"][key], b["obs_rms"][key])
    ea, eb = (json.loads((tmp_path / run / "eval.json").read_text()) for run in ("ppo", "ref"))
    assert ea["method"] == "ppo" and ea["student"]["returns"] == eb["returns"]


def names(text: str) -> set:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}


def test_stripped_script_knows_no_teacher():
    compile(stripped(), "ppo.py", "exec")
    found = sorted(n for n in names(stripped()) if any(w in n.lower() for w in ("teacher", "distill", "kl_div")))
    assert found == [], f"names of the method left in plain PPO: {found}"
    assert {"teachers", "distill_loss", "kl_divergence", "distill_coef_at"} <= names(source())  # the check can fail


def test_every_tag_is_a_comment_that_ends_its_line():
    """A tag is the last comment of its line (not a `# PPD: ...` in mid-comment, nor text inside a string that
    grep would cut in half), and only the module docstring mentions it otherwise."""
    lines = source().splitlines()
    comment_lines = {}
    for t in tokenize.generate_tokens(io.StringIO(source()).readline):
        if t.type == tokenize.COMMENT:
            comment_lines[t.start[0]] = t.string
    docstring_end = source().index('"""', 3)
    docstring_lines = source()[:docstring_end].count("\n") + 1
    tagged = [n for n, line in enumerate(lines, 1) if line.endswith(TAG)]
    assert len(tagged) > 100
    for n in tagged:
        assert comment_lines.get(n, "").endswith(TAG), f"line {n}: `{TAG}` is not a comment: {lines[n - 1]}"
    for n, line in enumerate(lines, 1):
        if TAG in line and not line.endswith(TAG):
            assert n <= docstring_lines, f"line {n}: `{TAG}` not at the end of the line: {line}"
