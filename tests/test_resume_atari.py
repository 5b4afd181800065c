"""Issue 7 on Atari (CPU): exact resume. The ALE vector env cannot save its games, so every Atari script restarts all
games, seeded by --seed and the step, right after each periodic checkpoint (--restart-games-at-checkpoint, on by
default), which is what a run resumed from that checkpoint does too. A run stopped at a periodic checkpoint and
resumed to the full budget then ends with exactly the parameters and optimizer state of the uninterrupted run, in
train_teacher.py (Atari domain), ppd_atari.py, student_distill.py and teacher_distill.py; without the restart it does
not (the control case, which shows that this test can fail).

In-process runs on Pong, Nature-CNN networks, 2 envs x 16 steps, a checkpoint every 2 rollouts; the final evaluation
(a full game per policy) is replaced by a stub here: it is the same code as in the MLP domain, whose resume tests
compare eval.json (tests/test_resume_exact.py). The SIGKILL part of issue 7 (the checkpoint write is atomic, the last
complete one is resumed) is domain-independent code, tested there too.
"""

import pytest
import torch
from test_ppd_pixels import save_tiny_teacher

import ppd_atari
import student_distill
import teacher_distill
import train_teacher as tt

ROLLOUT = 2 * 16
STOP, TOTAL = 2 * ROLLOUT, 3 * ROLLOUT  # a checkpoint (and game restart) after rollout 2, none after rollout 1; stopped after 2
MODULES = {"train_teacher": tt, "ppd_atari": ppd_atari, "student_distill": student_distill, "teacher_distill": teacher_distill}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pt")
    save_tiny_teacher("atari", path)  # PongNoFrameskip-v4, frame skip 3
    return path


def run(module, teacher: str, out, name: str, total: int, resume: bool = False, restart: bool = True, monkeypatch=None):
    """One in-process run; returns its final checkpoint (parameters, optimizer state, step)."""
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: ([0.0], 0))  # see the module docstring
    common = dict(num_envs=2, num_steps=16, total_timesteps=total, checkpoint_every=2 * ROLLOUT, eval_episodes=1,
                  cuda=False, output_dir=str(out), run_name=name, restart_games_at_checkpoint=restart,
                  resume=str(out / name) if resume else None)
    if module is tt:
        args = tt.Args(env_id="PongNoFrameskip-v4", arch="smaller", minibatch_size=16, frame_skip=3, **common)
    elif module is ppd_atari:
        args = ppd_atari.Args(teacher=teacher, student_arch="smaller", minibatch_size=16, **common)
    else:
        args = module.Args(teacher=teacher, student_arch="smaller", **common)
    module.main(args)
    return torch.load(out / name / "checkpoint.pt", weights_only=True)


def assert_same_training_state(got: dict, expected: dict) -> None:
    assert got["global_step"] == expected["global_step"] == TOTAL
    for net in ("actor", "critic"):
        assert got[net].keys() == expected[net].keys()
        for k in expected[net]:
            assert torch.equal(got[net][k], expected[net][k]), f"{net}.{k}"
    got_opt, expected_opt = got["train_state"]["optimizer"]["state"], expected["train_state"]["optimizer"]["state"]
    assert got_opt.keys() == expected_opt.keys()
    for i in expected_opt:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(got_opt[i][k], expected_opt[i][k]), (i, k)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[net][k] - b[net][k]).abs().max()) for net in ("actor", "critic") for k in a[net])


@pytest.mark.parametrize("script", list(MODULES))
def test_atari_run_stopped_at_a_checkpoint_resumes_exactly(script, teacher, tmp_path, monkeypatch):
    module = MODULES[script]
    reference = run(module, teacher, tmp_path, "reference", TOTAL, monkeypatch=monkeypatch)
    stopped = run(module, teacher, tmp_path, "stopped", STOP, monkeypatch=monkeypatch)
    assert stopped["global_step"] == STOP
    resumed = run(module, teacher, tmp_path, "stopped", TOTAL, resume=True, monkeypatch=monkeypatch)
    assert_same_training_state(resumed, reference)


def test_without_the_restart_a_resumed_atari_run_differs(teacher, tmp_path, monkeypatch):
    """The control: the uninterrupted run plays its games on through the checkpoint, the resumed one cannot."""
    reference = run(ppd_atari, teacher, tmp_path, "reference", TOTAL, restart=False, monkeypatch=monkeypatch)
    run(ppd_atari, teacher, tmp_path, "stopped", STOP, restart=False, monkeypatch=monkeypatch)
    resumed = run(ppd_atari, teacher, tmp_path, "stopped", TOTAL, resume=True, restart=False, monkeypatch=monkeypatch)
    assert resumed["global_step"] == reference["global_step"] == TOTAL
    assert max_difference(resumed, reference) > 0
