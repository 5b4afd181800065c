"""Videos (ppd_tools/video.py, and --capture-video, which calls it): the side-by-side GIF, the MuJoCo camera that
follows the robot, the Atari screen env that plays the policy's game, what eval.json says about the video, the
command that films checkpoints, and the refusals.

The end-to-end runs are in-process with tiny budgets (2 envs x 64 steps, one evaluation episode, clips of a fraction
of a second); rendering MuJoCo costs about 0.1-0.2 s a frame on this CPU.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_ppd_pixels import save_tiny_teacher

import ppd_atari
import ppd_mujoco
import student_distill
import teacher_distill
from conftest import REPO, run_script, script_env
from ppd_tools import video

HOPPER = os.path.join(REPO, "teachers", "Hopper-v5.pt")
CARTPOLE = os.path.join(REPO, "teachers", "CartPole-v1.pt")


def gif_frames(path: str) -> tuple:
    """(frames as uint8 RGB arrays, per-frame durations in ms) of an animated GIF."""
    image = Image.open(path)
    frames, durations = [], []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
        durations.append(image.info["duration"])
    return frames, durations


def hopper_teacher():
    ckpt = ppd_mujoco.load_checkpoint(HOPPER)
    return ppd_mujoco.agent_from_checkpoint(ckpt).actor, ppd_mujoco.RunningMeanStd((11,)).load_state_dict(ckpt["obs_rms"])


def test_save_video_puts_clips_side_by_side_and_the_shorter_clip_holds_its_last_frame(tmp_path):
    a = [np.full((120, 80, 3), (40 * t, 0, 0), np.uint8) for t in range(6)]  # 6 frames, scaled x2 to 240 x 160
    b = [np.full((60, 60, 3), (0, 0, 60 + 60 * t), np.uint8) for t in range(3)]  # 3 frames, scaled x4 to 240 x 240
    path = str(tmp_path / "v.gif")
    video.save_video(path, [("a", a), ("b", b)], 40)
    frames, durations = gif_frames(path)
    assert len(frames) == 6 and durations == [40] * 6
    assert frames[0].shape == (16 + 240, 160 + 4 + 240, 3)  # label band, clip a, gap, clip b
    for t, frame in enumerate(frames):
        assert (frame[20:, 4:156] == a[t][0, 0]).all()  # clip a plays all its frames
        assert (frame[20:, 168:400] == b[min(t, 2)][0, 0]).all()  # clip b holds its last frame from t = 2 on
        assert (frame[16:, 160:164] == 255).all()  # the white gap
    assert (frames[0][:16] < 128).any() and (frames[0][:16] == 255).mean() > 0.8  # labels: dark text on white
    assert os.listdir(tmp_path) == ["v.gif"]  # no temporary file left


def test_mujoco_clip_follows_the_robot_for_the_requested_time():
    actor, rms = hopper_teacher()
    frames, ret, ms = video.record_episode(actor, "Hopper-v5", "mlp", {}, 10_001, "cpu", rms, 1.6)
    # Hopper: 125 env steps per second, every 5th drawn (25 frames/s, 40 ms each); the teacher does not fall in 1.6 s
    assert ms == 40 and len(frames) == 1 + 200 // 5 and ret > 300
    assert frames[0].shape == (480, 480, 3)
    # gymnasium's default camera stays put and the hopper leaves the picture after about a second (the last ~15 frames
    # were all the same empty floor); the 'track' camera follows it: its brown body is in every frame, and the
    # picture keeps changing
    robot = [((f[..., 0] > 100) & (f[..., 0] > 1.6 * f[..., 1]) & (f[..., 1] > 1.3 * f[..., 2])).mean() for f in frames]
    assert min(robot) > 0.002, robot  # without the track camera: 0 in the last 16 frames
    assert all((frames[i] != frames[i + 1]).any() for i in range(len(frames) - 1))


@pytest.mark.parametrize("module", [ppd_atari, student_distill])
def test_atari_screen_env_plays_the_policys_game(module):
    make = ppd_atari.make_envs if module is ppd_atari else student_distill.make_atari_envs
    env = make("BreakoutNoFrameskip-v4", 1, 3, 4, eval_mode=True)
    screen = make("BreakoutNoFrameskip-v4", 1, 3, 4, eval_mode=True, screen=True)
    (obs, _), (rgb, _) = env.reset(seed=3), screen.reset(seed=3)
    rng, total, correlations = np.random.default_rng(0), 0.0, []
    for t in range(400):
        action = rng.integers(0, 4, 1)
        obs, reward, terminated, _, info = env.step(action)
        rgb, screen_reward, screen_terminated, _, screen_info = screen.step(action)
        assert rgb.shape == (1, 1, 210, 160, 3)
        assert reward[0] == screen_reward[0] and terminated[0] == screen_terminated[0]
        assert info["lives"][0] == screen_info["lives"][0]
        total += reward[0]
        if t % 50 == 0:  # the screen, made gray and small, is the policy's newest frame
            small = np.asarray(Image.fromarray(rgb[0, 0]).convert("L").resize((84, 84), Image.Resampling.BILINEAR), float)
            correlations.append(np.corrcoef(small.ravel(), obs[0, -1].ravel().astype(float))[0, 1])
    env.close()
    screen.close()
    assert total > 0  # the game went somewhere (random Breakout scores a few points in 400 steps)
    assert min(correlations) > 0.9, correlations


def run_main(module, tmp_path, *flags, **kwargs):
    args = module.Args(output_dir=str(tmp_path), run_name="run", cuda=False, num_envs=2, num_steps=64,
                       total_timesteps=128, eval_episodes=1, **kwargs)
    for flag in flags:
        setattr(args, flag, True)
    return module.main(args)


@pytest.mark.parametrize("module", [ppd_mujoco, teacher_distill])
def test_mlp_run_writes_the_video_next_to_eval_json(module, tmp_path):
    teacher = (HOPPER,) if module is ppd_mujoco else HOPPER
    evaluation = run_main(module, tmp_path, "capture_video", teacher=teacher, video_seconds=0.4)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "eval.json").read_text())["video"] == evaluation["video"]
    video = evaluation["video"]
    assert video["file"] == "video.gif" and video["seconds"] == 0.4 and video["seed"] == 1 + 10_000
    names = list(video["clip_returns"])
    assert names == ["teacher", "student (same)"]
    frames, durations = gif_frames(str(run_dir / video["file"]))
    assert frames[0].shape == (16 + 240, 240 + 4 + 240, 3)
    # 0.4 s of Hopper: 50 env steps, every 5th drawn; the teacher does not fall in that time, so its clip sets the length
    assert sum(durations) == (1 + 50 // 5) * 40 and all(d % 40 == 0 for d in durations)
    assert video["clip_returns"]["teacher"] > 0


@pytest.mark.parametrize("module", [ppd_atari, student_distill])
def test_atari_run_writes_the_video_next_to_eval_json(module, tmp_path):
    teacher = str(tmp_path / "teacher.pt")
    save_tiny_teacher("atari", teacher)  # frame skip 3: 20 agent steps per second
    evaluation = run_main(module, tmp_path, "capture_video", teacher=teacher, video_seconds=0.5, student_arch="smaller")
    frames, durations = gif_frames(str(tmp_path / "run" / "video.gif"))
    assert evaluation["video"]["seconds"] == 0.5 and list(evaluation["video"]["clip_returns"]) == ["teacher", "student (smaller)"]
    # 210 x 160 screens scaled to 240 x 183; every agent step is a frame (20 < 25 frames/s), 50 ms each
    assert frames[0].shape == (16 + 240, 183 + 4 + 183, 3)
    assert sum(durations) == (1 + 10) * 50 and all(d % 50 == 0 for d in durations)  # a GIF merges repeated frames
    assert (frames[-1][16:, :183] != frames[0][16:, :183]).any()  # the game moved


@pytest.mark.parametrize("module", [ppd_mujoco, ppd_atari, student_distill, teacher_distill])
def test_a_clip_length_that_is_not_positive_is_refused_before_anything_is_written(module, tmp_path, capsys):
    if module is ppd_mujoco:
        teacher = (HOPPER,)
    else:
        teacher = str(tmp_path / "teacher.pt")
        save_tiny_teacher("atari", teacher)
    with pytest.raises(SystemExit) as e:
        run_main(module, tmp_path, "capture_video", teacher=teacher, video_seconds=0.0)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --video-seconds must be > 0, got 0.0"]
    assert not (tmp_path / "run").exists()


def has_pygame() -> bool:
    try:
        import pygame  # noqa: F401
    except ImportError:
        return False
    return True


def test_videos_are_refused_where_the_env_cannot_draw_itself(tmp_path, capsys):
    procgen_teacher = str(tmp_path / "procgen.pt")
    save_tiny_teacher("procgen", procgen_teacher)
    cases = [(student_distill, procgen_teacher, "MLP or Atari")]
    if not has_pygame():  # gymnasium draws classic control with pygame, which requirements.txt leaves out
        cases.append((ppd_mujoco, (CARTPOLE,), "pip install pygame"))
    for module, teacher, hint in cases:
        with pytest.raises(SystemExit) as e:
            run_main(module, tmp_path, "capture_video", teacher=teacher)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --capture-video") and hint in err[0], err
        assert "leave out --capture-video" in err[0].lower()
    assert not (tmp_path / "run").exists()


def headless_env() -> dict:
    """A fresh server's environment: no display, no MUJOCO_GL (nor PyOpenGL's platform) set by hand."""
    unset = ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")
    return {k: v for k, v in script_env().items() if k not in unset}


def run_headless(tmp_path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "ppd_mujoco.py", "--teacher", HOPPER, "--num-envs", "2", "--num-steps", "64",
               "--total-timesteps", "128", "--eval-episodes", "1", "--capture-video", "--video-seconds", "0.4",
               "--no-cuda", "--output-dir", str(tmp_path), "--run-name", "run"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_mujoco_video_on_a_machine_without_display_or_mujoco_gl(tmp_path):
    result = run_headless(tmp_path, headless_env())
    assert result.returncode == 0, result.stderr[-2000:]
    frames, durations = gif_frames(str(tmp_path / "run" / "video.gif"))
    # 0.4 s of Hopper: 50 env steps, every 5th drawn, plus the first; the teacher moves in every one of them, so no two
    # frames are alike (a GIF would merge them)
    assert len(frames) == 1 + 50 // 5 and durations == [40] * len(frames)
    assert all((frames[i] != frames[i + 1]).any() for i in range(len(frames) - 1))
    # the video command films the student beside the teacher its checkpoint records, from the evaluation's seed and
    # both normalizations: the same GIF, byte for byte
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "ppd_tools.video", str(run_dir / "model.pt"), "--seconds", "0.4", "--output",
               str(tmp_path / "v.gif")]
    result = subprocess.run(command, cwd=REPO, env=headless_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "v.gif").read_bytes() == (run_dir / "video.gif").read_bytes()
    clip_returns = json.loads((run_dir / "eval.json").read_text())["video"]["clip_returns"]
    clips = ", ".join(f"{k} {v:.0f}" for k, v in clip_returns.items())
    assert result.stdout.strip() == f"{tmp_path / 'v.gif'}: {clips}"


def test_a_renderer_that_cannot_work_is_refused_at_the_start_in_one_line(tmp_path):
    result = run_headless(tmp_path, {**headless_env(), "MUJOCO_GL": "glfw"})  # GLFW needs a display
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --capture-video: Hopper-v5 cannot render"), lines
    assert "apt-get install libegl1" in lines[0] and "leave out --capture-video" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_video_command_refuses_in_one_line(tmp_path):
    procgen_teacher = str(tmp_path / "procgen.pt")
    save_tiny_teacher("procgen", procgen_teacher)
    (tmp_path / "taken.gif").write_bytes(b"keep")
    for flags, message in [([HOPPER, "--output", tmp_path / "taken.gif"], "exists; pass another --output, or --force"),
                           ([HOPPER, CARTPOLE, "--output", tmp_path / "x.gif"], "the checkpoints play different envs"),
                           ([procgen_teacher, "--output", tmp_path / "x.gif"], "Procgen is not filmed"),
                           ([HOPPER, "--seconds", "0", "--output", tmp_path / "x.gif"], "--seconds must be > 0")]:
        result = run_script("ppd_tools/video.py", *flags)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert (tmp_path / "taken.gif").read_bytes() == b"keep" and not (tmp_path / "x.gif").exists()


def test_a_copied_script_runs_alone_and_asks_for_ppd_tools_only_for_a_video_or_envpool(tmp_path):
    # the single-file promise: ppd_mujoco.py copied into an empty folder trains with no import from this repository
    shutil.copy(os.path.join(REPO, "ppd_mujoco.py"), tmp_path)
    env = {k: v for k, v in script_env().items() if k != "PYTHONPATH"}
    command = [sys.executable, "ppd_mujoco.py", "--teacher", CARTPOLE, "--num-envs", "2", "--num-steps", "64",
               "--total-timesteps", "128", "--eval-episodes", "1", "--no-cuda", "--output-dir", "out"]
    alone = subprocess.run(command + ["--run-name", "a"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert (tmp_path / "out" / "a" / "eval.json").exists()
    video = subprocess.run(command + ["--run-name", "b", "--capture-video"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert video.returncode == 2
    assert video.stderr == "error: --capture-video needs the repository's ppd_tools/ folder beside this script\n"
    assert not (tmp_path / "out" / "b").exists()
    fast = subprocess.run(command + ["--run-name", "c", "--env-backend", "envpool"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # the faster backend lives in ppd_tools/ too
    assert fast.returncode == 2
    assert fast.stderr == "error: --env-backend envpool needs the repository's ppd_tools/ folder beside this script\n"
    assert not (tmp_path / "out" / "c").exists()
