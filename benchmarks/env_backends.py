"""Do the two MLP env backends run the same task? The shipped teachers (trained on gymnasium), greedy, on gymnasium's
and on envpool's MuJoCo envs: the first episode of each of N envs per backend, the same env seeds on both.

    pip install --no-deps -r requirements-envpool.txt
    python benchmarks/env_backends.py --episodes 100

Writes results/env_backends.json and results/env_backends.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import ppd_mujoco  # noqa: E402


def greedy_returns(teacher: str, backend: str, episodes: int, seed: int) -> list:
    """The first episode of each of `episodes` envs, greedy actions of the teacher."""
    ckpt = ppd_mujoco.load_checkpoint(teacher)
    actor = ppd_mujoco.agent_from_checkpoint(ckpt).actor
    rms = ppd_mujoco.RunningMeanStd(ckpt["obs_shape"]).load_state_dict(ckpt["obs_rms"])
    envs = ppd_mujoco.make_envs(ckpt["env_id"], episodes, backend=backend)
    obs, _ = envs.reset(seed=seed)
    returns, running = np.full(episodes, np.nan), np.zeros(episodes)
    while np.isnan(returns).any():
        with torch.no_grad():
            action = ppd_mujoco.greedy_action(actor(torch.as_tensor(rms.normalize(obs)))).numpy()
        obs, reward, terminated, truncated, _ = envs.step(np.clip(action, -1, 1))
        running += reward
        ended = (terminated | truncated) & np.isnan(returns)
        returns[ended] = running[ended]
    envs.close()
    return returns.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per teacher and backend")
    parser.add_argument("--seed", type=int, default=20_000, help="env seed of the first env (env i: seed + i)")
    parser.add_argument("--teachers", nargs="*", default=["teachers/Hopper-v5.pt", "teachers/HalfCheetah-v5.pt"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for teacher in args.teachers:
        row = {"teacher": teacher}
        for backend in ("gymnasium", "envpool"):
            r = np.array(greedy_returns(os.path.join(REPO, teacher), backend, args.episodes, args.seed))
            row[backend] = {"mean": r.mean(), "std": r.std(), "median": float(np.median(r)), "min": r.min(),
                            "below_90pct_of_median": int((r < 0.9 * np.median(r)).sum()), "returns": r.tolist()}
            print(f"{teacher} {backend}: {r.mean():.1f} +- {r.std():.1f}", flush=True)
        g, e = row["gymnasium"], row["envpool"]
        row["difference_of_means"] = e["mean"] - g["mean"]
        row["stderr_of_difference"] = float(np.sqrt((g["std"] ** 2 + e["std"] ** 2) / args.episodes))
        rows.append(row)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    made_by = "python benchmarks/env_backends.py " + " ".join(sys.argv[1:])
    result = {"made_by": made_by, "commit": head.strip(), "date": time.strftime("%Y-%m-%d"),
              "episodes": args.episodes, "seed": args.seed, "teachers": rows}
    with open(os.path.join(REPO, "results", "env_backends.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    lines = [f"# The shipped teachers on both MLP env backends ({args.episodes} greedy episodes each)", "",
             f"Made by `{made_by}` at commit {result['commit']}: the first episode of each of {args.episodes} envs, env "
             f"seeds {args.seed}.. on both backends; `ppd_mujoco.make_envs(..., backend=...)`, as the scripts train.",
             "", "| teacher | gymnasium | envpool | envpool - gymnasium (std. error) | medians | episodes below 90% of "
             "the median (gymnasium / envpool) |", "|-|-|-|-|-|-|"]
    for row in rows:
        g, e = row["gymnasium"], row["envpool"]
        lines.append(f"| `{row['teacher']}` | {g['mean']:.1f} +- {g['std']:.1f} | {e['mean']:.1f} +- {e['std']:.1f} | "
                     f"{row['difference_of_means']:+.1f} ({row['stderr_of_difference']:.1f}) | {g['median']:.1f} / "
                     f"{e['median']:.1f} | {g['below_90pct_of_median']} / {e['below_90pct_of_median']} |")
    with open(os.path.join(REPO, "results", "env_backends.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
