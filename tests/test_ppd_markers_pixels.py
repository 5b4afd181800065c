"""ppd_atari.py's and ppd_procgen.py's `# PPD` markers are exact (issue 16): every line PPD adds to PPO ends in
`# PPD` and no other line does, so `grep -v "# PPD$" <script>` is a working plain-PPO script that takes its game from
its own flags (train_teacher.py's PPO number for number), and the `# PPD` lines are the whole method. The whole file:
about 25 s on the 2 shared cores (two tiny runs per script: the stripped script and train_teacher.py)."""

import importlib
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
SCRIPTS = {"ppd_atari.py": "PongNoFrameskip-v4", "ppd_procgen.py": "procgen:coinrun"}  # the stripped script's default
# tiny runs; gamma and ent-coef given explicitly, where train_teacher.py's defaults (the teacher's) differ
TINY = ["--num-envs", "2", "--num-steps", "32", "--minibatch-size", "32", "--total-timesteps", "64",
        "--eval-episodes", "1", "--gamma", "0.999", "--ent-coef", "0.0", "--no-cuda"]
EVAL = {"ppd_atari.py": ["--eval-max-frames", "400"], "ppd_procgen.py": []}


def source(script: str) -> str:
    with open(os.path.join(REPO, script)) as f:
        return f.read()


def stripped(script: str) -> str:
    """What `grep -v "# PPD$" <script>` writes."""
    return "".join(line for line in source(script).splitlines(keepends=True) if not line.rstrip("\n").endswith(TAG))


def names(text: str) -> set:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_stripped_script_trains_as_ppo_alone(tmp_path, script):
    """The stripped script, alone in a folder (no repository import), trains its default game as PPO, to the very
    parameters of train_teacher.py's PPO on that game."""
    path = tmp_path / script
    path.write_text(stripped(script))
    env = {k: v for k, v in script_env().items() if k != "PYTHONPATH"}
    flags = TINY + EVAL[script] + ["--output-dir", str(tmp_path)]
    ppo = subprocess.run([sys.executable, str(path), "--student-arch", "smaller", "--run-name", "ppo", *flags],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ppo.returncode == 0, ppo.stderr
    assert "teacher" not in ppo.stdout
    model = torch.load(tmp_path / "ppo" / "model.pt", weights_only=True)
    evaluation = json.loads((tmp_path / "ppo" / "eval.json").read_text())
    assert model["env_id"] == evaluation["env_id"] == SCRIPTS[script] and model["global_step"] == 64
    student = evaluation["student"] if script == "ppd_atari.py" else evaluation["test_levels"]["student"]
    assert evaluation["method"] == "ppo" and student["episodes"] == 1
    assert not [key for key in evaluation if "teacher" in key]
    ref = run_script("train_teacher.py", "--env-id", SCRIPTS[script], "--arch", "smaller", "--run-name", "ref", *flags)
    assert ref.returncode == 0, ref.stderr
    expected = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    for net in ("actor", "critic"):
        assert model[net].keys() == expected[net].keys()
        for key, tensor in expected[net].items():
            assert torch.equal(model[net][key], tensor), f"{net}.{key} differs"


@pytest.mark.parametrize("script, flags", [("ppd_atari.py", {"frame_skip": 4}),
                                           ("ppd_procgen.py", {"procgen_num_levels": 10})])
def test_an_env_flag_of_plain_ppo_that_contradicts_the_teacher_is_refused(tmp_path, capsys, script, flags):
    from test_ppd_pixels import save_tiny_teacher  # frame skip 3; levels [5, 55)

    module = importlib.import_module(script.removesuffix(".py"))
    teacher = str(tmp_path / "teacher.pt")
    save_tiny_teacher(script.removesuffix(".py").split("_")[1], teacher)
    with pytest.raises(SystemExit) as e:
        module.main(module.Args(teacher=(teacher,), output_dir=str(tmp_path / "out"), run_name="run", **flags))
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "teacher" in line and "leave" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_stripped_script_knows_no_teacher(script):
    compile(stripped(script), script, "exec")
    found = sorted(n for n in names(stripped(script)) if any(w in n.lower() for w in ("teacher", "distill", "kl_div")))
    assert found == [], f"names of the method left in plain PPO: {found}"
    assert {"teachers", "distill_loss", "kl_divergence", "distill_coef_at"} <= names(source(script))  # it can fail


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_every_tag_is_a_comment_that_ends_its_line(script):
    """A tag is the last comment of its line (not a `# PPD: ...` in mid-comment, nor text inside a string), and only
    the module docstring mentions it otherwise."""
    text = source(script)
    lines = text.splitlines()
    comments = {t.start[0]: t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type == tokenize.COMMENT}
    docstring_lines = text[:text.index('"""', 3)].count("\n") + 1
    tagged = [n for n, line in enumerate(lines, 1) if line.endswith(TAG)]
    assert len(tagged) > 100
    for n in tagged:
        assert comments.get(n, "").endswith(TAG), f"line {n}: `{TAG}` is not a comment: {lines[n - 1]}"
    for n, line in enumerate(lines, 1):
        if TAG in line and not line.endswith(TAG):
            assert n <= docstring_lines, f"line {n}: `{TAG}` not at the end of the line: {line}"
