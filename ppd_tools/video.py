"""Videos of trained policies: one greedy episode of each, side by side, as an animated GIF (Pillow, no ffmpeg).

    python -m ppd_tools.video runs/<run>/model.pt                    # a student beside its teacher(s)
    python -m ppd_tools.video teachers/Hopper-v5.pt runs/<run>/model.pt --seconds 4 --output hopper.gif

Any checkpoint of these scripts can be filmed: MLP envs (MuJoCo through its model's 'track' camera, classic control
with pygame) and Atari (the full color screen); Procgen's frames are its 64x64 observations and are not filmed.
The distillation scripts' --capture-video calls film() after their final evaluation, with the same env seed as its
first episode; this command does the same from the checkpoints alone.
"""

import argparse
import gc
import os
import sys
from typing import Optional

import numpy as np
import torch

# MuJoCo on a Linux machine without a display: EGL, unless MUJOCO_GL says otherwise (gymnasium tries GLFW first, and
# that failed attempt can leave OpenGL unusable for the backends after it)
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import student_distill as lib  # noqa: E402  (the envs and networks of every domain, and the checkpoint format)

VIDEO_FPS, VIDEO_HEIGHT = 25, 240  # frames shown per second (at most), pixel height of each clip


class CannotFilm(ValueError):
    """No video can be made here: the message says what to install or change (one line)."""


def make_render_env(env_id: str):
    """The env drawing itself; MuJoCo envs through their model's 'track' camera, which follows the robot (gymnasium's
    default free camera stays where the episode began, and a hopper leaves the picture within a second)."""
    try:
        return lib.gym.make(env_id, render_mode="rgb_array", camera_name="track")
    except TypeError:  # not a MuJoCo env: no camera_name
        return lib.gym.make(env_id, render_mode="rgb_array")


def video_problem(env_id: str, domain: str) -> Optional[str]:
    """None, or one line saying why no video can be made here (a missing renderer, Procgen): asked before training."""
    if domain == "procgen":
        return "Procgen is not filmed (its frames are its 64x64 observations): film an MLP or Atari run"
    if domain == "atari":
        return None  # the ALE always draws its screen
    try:
        env = make_render_env(env_id)
        env.reset(seed=0)
        env.render()
        env.close()
        return None
    except Exception as e:  # gymnasium's DependencyNotInstalled, a missing OpenGL, ...
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    env, hook, sys.unraisablehook = None, sys.unraisablehook, lambda unraisable: None
    gc.collect()  # the half-made renderer goes now, without the tracebacks its destructors print at exit
    sys.unraisablehook = hook
    return (
        f"{env_id} cannot render ({reason}); install its renderer (classic control: `pip install pygame`; "
        "MuJoCo: EGL, `apt-get install libegl1`, or OSMesa, `apt-get install libosmesa6` and MUJOCO_GL=osmesa)"
    )


def record_episode(
    actor, env_id: str, domain: str, env_config: dict, seed: int, device, obs_rms, seconds: float
) -> tuple:
    """Frames (uint8 [H, W, 3]) of the first `seconds` of one greedy episode in the unmodified env, every k-th step so
    that they play at about VIDEO_FPS; returns (frames, return over those steps, milliseconds per frame).
    Atari: the policy sees the usual 84x84 gray stack; the color screens come from a second env with the same seed,
    stepped with the same actions (the ALE is deterministic given both: checked every step on the reward and the
    lives, and by tests/test_video.py on the pictures)."""
    if domain == "atari":
        frame_skip = env_config.get("frame_skip", 4)
        env = lib.make_atari_envs(env_id, 1, seed, frame_skip, eval_mode=True)
        screen = lib.make_atari_envs(env_id, 1, seed, frame_skip, eval_mode=True, screen=True)
        (obs, _), (rgb, _) = env.reset(seed=seed), screen.reset(seed=seed)
        fps = 60 / frame_skip  # agent steps per second (the ALE runs at 60 frames/s)
        render = lambda: rgb[0, 0]  # noqa: E731 (the latest screen: rgb is reassigned below)
    else:
        env = make_render_env(env_id)
        obs, _ = env.reset(seed=seed)
        obs, fps, render = obs[None], env.metadata.get("render_fps") or VIDEO_FPS, env.render
    every = max(1, round(fps / VIDEO_FPS))
    frames, total = [render()], 0.0
    actor.eval()
    for t in range(1, max(1, int(seconds * fps)) + 1):
        x = obs_rms.normalize(obs) if obs_rms is not None else obs
        with torch.no_grad():
            action = lib.greedy_action(actor(torch.as_tensor(x, device=device))).cpu().numpy()
        if domain == "atari":
            obs, reward, _, _, info = env.step(action)
            rgb, screen_reward, _, _, screen_info = screen.step(action)
            if reward[0] != screen_reward[0] or info["lives"][0] != screen_info["lives"][0]:
                print(
                    f"warning: the video's screen env left the policy's game at step {t}; the clip ends there",
                    file=sys.stderr,
                )
                break
            done = bool(info["_episode"][0])  # game over: rgb is already the next game's first screen
            total += float(reward[0])
            if done:
                break
        else:
            if actor.continuous:
                action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action[0])
            obs, done = obs[None], terminated or truncated
            total += float(reward)
        if t % every == 0 or done:
            frames.append(render())
        if done:
            break
    env.close()
    if domain == "atari":
        screen.close()
    return frames, total, 1000 * every / fps


def save_video(path: str, clips: list, ms_per_frame: float) -> None:
    """Animated GIF of the labelled clips [(label, frames)] side by side, each scaled to VIDEO_HEIGHT and headed by its
    label; a clip that ends early holds its last frame. Written atomically."""
    from PIL import Image, ImageDraw

    def scaled(frame: np.ndarray) -> np.ndarray:
        width = round(frame.shape[1] * VIDEO_HEIGHT / frame.shape[0])
        return np.asarray(Image.fromarray(frame).resize((width, VIDEO_HEIGHT), Image.Resampling.BILINEAR))

    clips = [(label, [scaled(f) for f in frames]) for label, frames in clips]
    images = []
    for t in range(max(len(frames) for _, frames in clips)):
        row = [
            np.pad(frames[min(t, len(frames) - 1)], ((16, 0), (0, 4), (0, 0)), constant_values=255)
            for _, frames in clips
        ]
        image = Image.fromarray(np.concatenate(row, axis=1)[:, :-4])  # white label band on top, 4-pixel gaps
        x = 0
        for (label, _), column in zip(clips, row):
            ImageDraw.Draw(image).text((x + 3, 2), label, fill=(0, 0, 0))
            x += column.shape[1]
        images.append(image)
    tmp = f"{path}.tmp.{os.getpid()}"
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=max(20, round(ms_per_frame)), loop=0
    )
    os.replace(tmp, path)


def film(
    path: str, policies: list, env_id: str, domain: str, env_config: dict, seed: int, device, seconds: float
) -> dict:
    """One greedy episode of each policy [(name, actor, obs_rms or None)] from env seed `seed`, side by side in the GIF
    at `path`; returns what eval.json records of it (file name, seconds, seed, each clip's return)."""
    clips = [
        (name, *record_episode(actor, env_id, domain, env_config, seed, device, rms, seconds))
        for name, actor, rms in policies
    ]
    save_video(path, [(f"{name}: {ret:.0f}", frames) for name, frames, ret, _ in clips], clips[0][3])
    return {
        "file": os.path.basename(path),
        "seconds": seconds,
        "seed": seed,
        "clip_returns": {name: ret for name, _, ret, _ in clips},
    }


def policies_of(paths: list, with_teachers: bool = True) -> list:
    """[(name, actor, obs_rms, checkpoint)] of the checkpoints, each student preceded by the teachers it records."""
    out = []
    for path in paths:
        ckpt = lib.load_checkpoint(path)
        teachers = ckpt.get("args", {}).get("teacher") if with_teachers else None
        teachers = [teachers] if isinstance(teachers, str) else list(teachers or [])
        for k, teacher in enumerate(teachers):
            if not os.path.exists(teacher):
                raise CannotFilm(
                    f"'{path}' was distilled from '{teacher}', which is not here; pass the teacher's "
                    "model.pt before it and --no-teachers"
                )
            out.append((f"teacher{'' if len(teachers) == 1 else f' {k}'}", lib.load_checkpoint(teacher)))
        arch = ckpt.get("arch") or ckpt.get("args", {}).get("student_arch")
        out.append(
            (
                f"student ({arch})"
                if teachers
                else os.path.basename(os.path.dirname(os.path.abspath(path)))
                if os.path.basename(path) == "model.pt"
                else os.path.basename(path),
                ckpt,
            )
        )
    policies = []
    for name, ckpt in out:
        rms = ckpt.get("obs_rms") and lib.RunningMeanStd(tuple(ckpt["obs_shape"])).load_state_dict(ckpt["obs_rms"])
        policies.append((name, lib.agent_from_checkpoint(ckpt).actor, rms, ckpt))
    return policies


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m ppd_tools.video", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="model.pt files of these scripts (teachers or students)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip, in seconds of the env's time")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="env seed (default: the first checkpoint's evaluation seed, its --seed + 10000)",
    )
    parser.add_argument("--output", default=None, help="the GIF (default: video.gif next to the last checkpoint)")
    parser.add_argument("--no-teachers", action="store_true", help="film only the given checkpoints")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    args = parser.parse_args(argv)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoints[-1])), "video.gif")
    try:
        if not args.seconds > 0:
            raise CannotFilm(f"--seconds must be > 0, got {args.seconds}")
        if os.path.exists(output) and not args.force:
            raise CannotFilm(f"'{output}' exists; pass another --output, or --force to overwrite it")
        policies = policies_of(args.checkpoints, with_teachers=not args.no_teachers)
        envs = {(ckpt["env_id"], ckpt["domain"]) for _, _, _, ckpt in policies}
        if len(envs) > 1:
            raise CannotFilm(
                f"the checkpoints play different envs ({', '.join(sorted(e for e, _ in envs))}); film one env at a time"
            )
        (env_id, domain), first = envs.pop(), policies[0][3]
        if problem := video_problem(env_id, domain):
            raise CannotFilm(problem)
    except (CannotFilm, lib.UsageError) as e:
        lib.fail(str(e))
    seed = args.seed if args.seed is not None else first.get("args", {}).get("seed", 1) + 10_000
    video = film(
        output,
        [(name, actor, rms) for name, actor, rms, _ in policies],
        env_id,
        domain,
        first.get("env_config", {}),
        seed,
        "cpu",
        args.seconds,
    )
    print(f"{output}: " + ", ".join(f"{name} {ret:.0f}" for name, ret in video["clip_returns"].items()))
    return video


if __name__ == "__main__":
    main()
