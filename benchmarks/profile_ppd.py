"""Where the time of a ppd_mujoco.py run goes (cProfile of the script's main, in this process).

    python benchmarks/profile_ppd.py                    # Hopper-v5, the paper's distillation settings, 46080 steps
    python benchmarks/profile_ppd.py --steps 23040 --top 30
    python benchmarks/profile_ppd.py --steps 23040 --env-backend envpool     # -> results/profile_ppd_envpool.md

Writes results/profile_ppd.md: the share of the training run spent stepping the environments (gymnasium's
SyncVectorEnv, MuJoCo and the env's Python), in the policy and value networks, in backward passes and in the
optimizer, plus cProfile's top functions by own time. cProfile slows Python-heavy code more than C code, so the
shares are a guide to what to optimize, not a measurement of steps/s (benchmarks/throughput.py is that).
"""

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import ppd_mujoco  # noqa: E402

# (what, file suffix, function name) of the calls whose cumulative time is reported
GROUPS = [
    ("whole run (main)", "ppd_mujoco.py", "main"),
    ("environment steps (SyncVectorEnv + RecordEpisodeStatistics)", os.path.join("wrappers", "vector", "common.py"), "step"),
    ("environment steps (envpool, stepped by its threads)", "envpool_backend.py", "step"),
    ("  of which MuJoCo's mj_step", "~", "<built-in method mujoco._functions.mj_step>"),
    ("policy + value forward (rollout and update)", "ppd_mujoco.py", "get_action_and_value"),
    ("backward passes", "_tensor.py", "backward"),
    ("Adam steps", "optimizer.py", "wrapper"),
    ("final evaluation (student and teacher)", "ppd_mujoco.py", "evaluate"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=46080, help="environment steps (a multiple of 18 x 64)")
    parser.add_argument("--top", type=int, default=20, help="functions listed by own time")
    parser.add_argument("--env-backend", default="gymnasium", choices=["gymnasium", "envpool"], help="training envs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        run_args = ppd_mujoco.Args(teacher=os.path.join(REPO, "teachers", "Hopper-v5.pt"), total_timesteps=args.steps,
                                   eval_episodes=2, checkpoint_every=0, cuda=False, output_dir=out, run_name="profile",
                                   gamma=0.999, env_backend=args.env_backend)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(ppd_mujoco.main, run_args)
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    cumulative = {}
    for (path, _, name), (_, _, _, ct, _) in stats.stats.items():
        for label, suffix, fn in GROUPS:
            if name == fn and path.endswith(suffix):
                cumulative[label] = cumulative.get(label, 0.0) + ct
    total = cumulative.get("whole run (main)", wall)
    lines = ["# Where a ppd_mujoco.py run spends its time (cProfile)", "",
             f"Made by `python benchmarks/profile_ppd.py {' '.join(sys.argv[1:])}`: Hopper-v5, shipped teacher, 18 envs x "
             f"64 steps, minibatch 576, 4 epochs, {args.steps} steps, {args.env_backend} envs, one torch thread, CPU; {wall:.1f} s under the "
             "profiler.", "", "| part | seconds | share of the run |", "|-|-|-|"]
    lines += [f"| {label} | {cumulative.get(label, 0.0):.2f} | {cumulative.get(label, 0.0) / total:.0%} |" for label, _, _ in GROUPS
              if label in cumulative]
    rest = total - sum(v for k, v in cumulative.items() if k != "whole run (main)" and not k.startswith(" "))
    lines += [f"| the rest: the loop's own Python (obs normalization, reward scaling, GAE, the PPD loss, logging), "
              f"start-up (imports, env and network creation, tensorboard) | {rest:.2f} | {rest / total:.0%} |"]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-(args.top + 1):]
    lines += ["", f"Top {args.top} functions by own time:", "", "```"] + top + ["```"]
    os.makedirs(os.path.join(REPO, "results"), exist_ok=True)
    name = "profile_ppd.md" if args.env_backend == "gymnasium" else f"profile_ppd_{args.env_backend}.md"
    with open(os.path.join(REPO, "results", name), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
