"""Issue 7, pre-emption and determinism, for train_teacher.py and ppd_mujoco.py on MuJoCo (CPU):
- another seed gives other results (the same seed gives identical ones: tests/test_golden.py);
- a run killed with SIGKILL at a random moment after its first checkpoint, resumed with --resume, ends with exactly
  the parameters and eval.json (all but the command line) of the uninterrupted run, also with mass randomization;
- what a kill during a checkpoint write leaves behind (a half-written temporary file) is ignored by --resume.
student_distill.py and teacher_distill.py: tests/test_resume_baselines.py."""

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from conftest import run_script, start_script

TINY = ["--num-envs", "4", "--num-steps", "64", "--minibatch-size", "128", "--total-timesteps", "2560",
        "--checkpoint-every", "256", "--eval-episodes", "2", "--no-cuda"]
SCRIPTS = {
    "train_teacher.py": ["--env-id", "Hopper-v5"],
    "ppd_mujoco.py": ["--teacher", "teachers/Hopper-v5.pt"],
}


def run(script: str, out, name: str, *extra: str) -> str:
    result = run_script(script, *SCRIPTS[script], *TINY, *extra, "--output-dir", out, "--run-name", name)
    assert result.returncode == 0, result.stderr[-2000:]
    return os.path.join(out, name)


def outcome(run_dir: str) -> tuple:
    """(eval.json without the command line, every parameter of the final model)."""
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    evaluation.pop("command")
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    return evaluation, {f"{net}.{k}": v for net in ("actor", "critic") for k, v in model[net].items()}


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(script, *extra): the outcome of an uninterrupted run, made once per module and flags."""
    cache = {}

    def get(script: str, *extra: str) -> tuple:
        key = (script, extra)
        if key not in cache:
            cache[key] = outcome(run(script, tmp_path_factory.mktemp("reference"), "reference", *extra))
        return cache[key]

    return get


def kill_at_random_moment(script: str, out, name: str, rng: random.Random, *extra: str) -> str:
    """Start the run, wait for its first checkpoint, SIGKILL it a random moment later, resume it to the end."""
    run_dir = os.path.join(out, name)
    proc = start_script(script, *SCRIPTS[script], *TINY, *extra, "--output-dir", out, "--run-name", name)
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.5))  # after the first of 10 checkpoints: about a second of training is left
    proc.kill()
    proc.communicate()
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    assert proc.returncode != 0, "the run finished before it could be killed: raise TINY's --total-timesteps"
    resumed = run_script(script, *SCRIPTS[script], *TINY, *extra, "--output-dir", out, "--run-name", name,
                         "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    return run_dir


def test_another_seed_gives_other_results(reference, tmp_path):
    # that the same seed gives identical results, run after run, is tests/test_golden.py's check (bit for bit)
    a = reference("ppd_mujoco.py")
    c = outcome(run("ppd_mujoco.py", tmp_path, "c", "--seed", "2"))
    assert not all(torch.equal(a[1][k], c[1][k]) for k in a[1])
    assert a[0] != c[0]


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("extra", [[], ["--torso-mass-scale", "0.7", "--mass-randomization", "0.3"]], ids=["plain", "udr"])
def test_sigkill_at_a_random_moment_then_resume_ends_exactly_like_an_uninterrupted_run(script, extra, reference,
                                                                                       tmp_path):
    rng = random.Random(f"{script}{extra}{time.time()}")  # a new moment every time the suite runs
    assert_same(outcome(kill_at_random_moment(script, tmp_path, "killed", rng, *extra)), reference(script, *extra))


def ctrl_c_after_first_checkpoint(proc, run_dir: str, presses: int = 1) -> str:
    """Press Ctrl-C (SIGINT) `presses` times, 0.3 s apart, once the run has written its first checkpoint; its stderr."""
    try:
        deadline = time.time() + 120
        checkpoint = os.path.join(run_dir, "checkpoint.pt")
        while not os.path.exists(checkpoint) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()[-2000:]
        for press in range(presses):
            time.sleep(0.3 if press else 0.0)
            proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_ctrl_c_writes_a_checkpoint_and_resume_ends_exactly_like_an_uninterrupted_run(script, reference, tmp_path):
    """Ctrl-C (SIGINT) does what SIGTERM does: the update finishes, checkpoint.pt is written, exit 130 with the
    --resume hint and no traceback; the resumed run ends with the uninterrupted run's parameters and eval.json."""
    run_dir = os.path.join(tmp_path, "stopped")
    proc = start_script(script, *SCRIPTS[script], *TINY, "--output-dir", tmp_path, "--run-name", "stopped")
    stderr = ctrl_c_after_first_checkpoint(proc, run_dir)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "Ctrl-C" in stderr and f"--resume {run_dir}" in stderr
    assert not os.path.exists(os.path.join(run_dir, "eval.json"))  # it stopped before the end
    resumed = run_script(script, *SCRIPTS[script], *TINY, "--output-dir", tmp_path, "--run-name", "stopped",
                         "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    assert_same(outcome(run_dir), reference(script))


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    # rollouts of 4 x 2048 steps take seconds: the second Ctrl-C comes while the first waits for the update to end
    run_dir = os.path.join(tmp_path, "stopped")
    proc = start_script("ppd_mujoco.py", *SCRIPTS["ppd_mujoco.py"], "--num-envs", "4", "--num-steps", "2048",
                        "--minibatch-size", "2048", "--total-timesteps", "81920", "--checkpoint-every", "8192",
                        "--no-cuda", "--output-dir", tmp_path, "--run-name", "stopped")
    stderr = ctrl_c_after_first_checkpoint(proc, run_dir, presses=2)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert "Ctrl-C again stops at once" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == "error: stopped by Ctrl-C; continue from the last checkpoint.pt with --resume <run folder>"
    saved = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)  # the periodic one, intact
    assert saved["global_step"] == 8192


def test_half_written_checkpoint_left_by_a_kill_during_the_write_is_ignored(reference, tmp_path):
    script = "ppd_mujoco.py"
    # a run stopped after 3 of its 10 updates: what a SIGKILL between two checkpoints leaves
    partial = run_script(script, *SCRIPTS[script], *TINY[:-5], "--total-timesteps", "768", "--checkpoint-every", "256",
                         "--eval-episodes", "2", "--no-cuda", "--output-dir", tmp_path, "--run-name", "killed")
    assert partial.returncode == 0, partial.stderr[-2000:]
    run_dir = tmp_path / "killed"
    for f in ("model.pt", "eval.json"):  # not finished yet: the kill came before the end
        os.remove(run_dir / f)
    # ... and a kill in the middle of the next checkpoint write: atomic_save's temporary file, cut short
    whole = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt.tmp99999").write_bytes(whole[: len(whole) // 2])
    resumed = run_script(script, *SCRIPTS[script], *TINY, "--output-dir", tmp_path, "--run-name", "killed",
                         "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "at step 768" in resumed.stdout
    assert_same(outcome(str(run_dir)), reference(script))


def test_mass_randomization_changes_masses_every_episode_and_evaluation_env_is_unmodified(reference):
    import gymnasium as gym

    import ppd_mujoco

    nominal = gym.make("Hopper-v5").unwrapped.model.body_mass.copy()
    torso = [gym.make("Hopper-v5").unwrapped.model.body(i).name for i in range(len(nominal))].index("torso")
    env = ppd_mujoco.MassRandomization(gym.make("Hopper-v5"), torso_scale=0.7, spread=0.3)
    masses = []
    for seed in (1, None, None):
        env.reset(seed=seed)
        masses.append(env.unwrapped.model.body_mass.copy())
    for m in masses:
        assert m[torso] == pytest.approx(0.7 * nominal[torso])  # the source Hopper's torso, never randomized
        others = np.delete(np.arange(len(nominal)), [0, torso])  # body 0 is the world (mass 0)
        ratio = m[others] / nominal[others]
        assert np.all((ratio >= 0.7) & (ratio <= 1.3)) and np.ptp(ratio) > 0.01
    assert not np.allclose(masses[0], masses[1]) and not np.allclose(masses[1], masses[2])
    env.reset(seed=1)  # seeded: the same masses again
    np.testing.assert_array_equal(env.unwrapped.model.body_mass, masses[0])

    evaluation = reference("ppd_mujoco.py", "--torso-mass-scale", "0.7", "--mass-randomization", "0.3")[0]
    assert evaluation["train_env"] == {"torso_mass_scale": 0.7, "mass_randomization": 0.3}
    assert evaluation["eval_env"] == "Hopper-v5, unmodified"
    assert evaluation != reference("ppd_mujoco.py")[0]


def test_students_train_where_their_teacher_did_unless_told_otherwise(tmp_path):
    teacher = run("train_teacher.py", tmp_path, "teacher", "--torso-mass-scale", "0.7", "--mass-randomization", "0.3")
    result = run_script("ppd_mujoco.py", "--teacher", os.path.join(teacher, "model.pt"), *TINY,
                        "--output-dir", tmp_path, "--run-name", "student")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.load(open(tmp_path / "student" / "eval.json"))["train_env"] == {"torso_mass_scale": 0.7,
                                                                                "mass_randomization": 0.3}


@pytest.mark.parametrize("script,flags", [
    ("ppd_mujoco.py", ["--teacher", "teachers/CartPole-v1.pt", "--mass-randomization", "0.3"]),
    ("train_teacher.py", ["--env-id", "Hopper-v5", "--mass-randomization", "1.5"]),
    ("train_teacher.py", ["--env-id", "PongNoFrameskip-v4", "--torso-mass-scale", "0.7"]),
])
def test_mass_options_where_they_cannot_apply_are_one_line_errors(script, flags, tmp_path):
    result = run_script(script, *flags, "--output-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "mass" in result.stderr
    assert os.listdir(tmp_path) == []


def episodic_returns(run_dir: str) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("charts/episodic_return")]


@pytest.mark.parametrize("script, flags", [("train_teacher.py", ["--env-id", "Ant-v5"]),
                                           ("ppd_mujoco.py", ["--teacher", "teachers/Ant-v5.pt"])])
def test_ant_resumes_exactly_its_forward_reward_reads_restored_positions(script, flags, tmp_path):
    # Ant-v5's forward reward is the torso's x from data.xpos (derived from the state, which mj_setState does not
    # recompute) before and after the step; Hopper's reads qpos. Stopped at 1280 steps, one episode per env spans the
    # resume (random Ant episodes last up to 1000 steps): its return and every later number equal the uninterrupted run's
    common = [*flags, "--num-envs", "2", "--num-steps", "64", "--minibatch-size", "64", "--eval-episodes", "1",
              "--checkpoint-every", "256", "--no-cuda", "--output-dir", tmp_path]
    runs = [("whole", "2560", []), ("cut", "1280", []), ("cut", "2560", ["--resume", tmp_path / "cut"])]
    for name, steps, extra in runs:
        result = run_script(script, *common, "--total-timesteps", steps, "--run-name", name, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    whole, cut = episodic_returns(tmp_path / "whole"), episodic_returns(tmp_path / "cut")
    assert any(step > 1280 for step, _ in whole)  # episodes end after the resume: the comparison has something
    assert whole == cut
    assert_same(outcome(str(tmp_path / "whole")), outcome(str(tmp_path / "cut")))
