"""How fast can each student network fit a trained Atari teacher's policy? Plain supervised distillation on fixed
frames, no RL: why results/atari_gpu_h200's smaller PPD student was still at the teacher's marginal policy.

The teacher plays `--num-envs` x `--steps` frames of its game with sampled actions; every fifth frame is held out.
Each student network (ppd_atari.py's ARCHS) then minimizes the scripts' KL(teacher || student) on minibatches of
`--batch` training frames with Adam (eps 1e-5) and the scripts' gradient clipping (0.5), and the held-out KL is
logged every `--every` iterations. Also logged: how much each network's untrained features vary across the frames
(std over frames of the flattened conv output, mean over units), the signal the first updates have to work with.

    python benchmarks/offline_fit.py --teacher runs/atari_gpu/teacher/model.pt \\
        --fit smaller:3e-4:3000 same:3e-4:300 --out results/atari_gpu_h200/offline_fit
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ppd_atari  # noqa: E402


def teacher_frames(teacher, env_id: str, frame_skip: int, num_envs: int, steps: int, seed: int) -> torch.Tensor:
    envs = ppd_atari.make_envs(env_id, num_envs, seed, frame_skip)
    obs, _ = envs.reset(seed=seed)
    frames = []
    for _ in range(steps):
        with torch.no_grad():
            action = teacher.actor(torch.as_tensor(obs)).sample().numpy()
        frames.append(obs.copy())
        obs, *_ = envs.step(action)
    envs.close()
    return torch.as_tensor(np.concatenate(frames))


def feature_spread(agent, frames: torch.Tensor) -> float:
    """Std over frames of the untrained flattened conv features, mean over units."""
    with torch.no_grad():
        return agent.actor.body.convs(frames.float() / 255.0).std(0).mean().item()  # as the bodies do


def fit(arch: str, lr: float, iters: int, every: int, batch: int, frames, logits, held_out, seed: int, log) -> dict:
    torch.manual_seed(seed)
    agent = ppd_atari.Agent(ppd_atari.ARCHS[arch], tuple(frames.shape[1:]), ppd_atari.gym.spaces.Discrete(
        logits.shape[1]))
    record = {"arch": arch, "network": ppd_atari.ARCHS[arch], "lr": lr, "iterations": iters, "batch": batch,
              "feature_spread": feature_spread(agent, frames[:256]), "curve": []}
    optimizer = torch.optim.Adam(agent.actor.parameters(), lr=lr, eps=1e-5)
    train = ~held_out
    x_train, t_train = frames[train], logits[train]
    t0 = time.time()
    for it in range(iters + 1):
        if it % every == 0 or it == iters:
            with torch.no_grad():
                test = ppd_atari.kl_divergence(logits[held_out], agent.actor(frames[held_out]).logits).mean().item()
            record["curve"].append({"iteration": it, "held_out_kl": test, "seconds": round(time.time() - t0, 1)})
            log(f"{arch} lr {lr:g}: iteration {it}, held-out KL {test:.3f} ({time.time() - t0:.0f} s)")
        if it == iters:
            break
        idx = torch.randint(len(x_train), (batch,))
        loss = ppd_atari.kl_divergence(t_train[idx], agent.actor(x_train[idx]).logits).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.actor.parameters(), 0.5)
        optimizer.step()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="an Atari model.pt of train_teacher.py")
    parser.add_argument("--fit", nargs="+", default=["smaller:3e-4:3000", "same:3e-4:300"],
                        help="arch:lr:iterations of each student fit (arch: smaller, same, larger)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs the teacher plays in (default 8)")
    parser.add_argument("--steps", type=int, default=400, help="steps of each env (default 400: 3200 frames)")
    parser.add_argument("--batch", type=int, default=256, help="minibatch size (default 256)")
    parser.add_argument("--every", type=int, default=250, help="held-out KL every this many iterations")
    parser.add_argument("--seed", type=int, default=1, help="seed of the envs and the networks (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", default=os.path.join("runs", "offline_fit"), help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    fits = []
    for spec in args.fit:
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] not in ppd_atari.ARCHS:
            parser.error(f"--fit {spec!r}: expected arch:lr:iterations with arch one of {', '.join(ppd_atari.ARCHS)}")
        fits.append((parts[0], float(parts[1]), int(parts[2])))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def log(message: str) -> None:
        print(message, flush=True)

    ckpt = ppd_atari.load_checkpoint(args.teacher)
    teacher = ppd_atari.agent_from_checkpoint(ckpt).eval()
    frames = teacher_frames(teacher, ckpt["env_id"], ckpt["env_config"]["frame_skip"], args.num_envs, args.steps,
                            args.seed)
    with torch.no_grad():
        logits = teacher.actor(frames).logits
    held_out = torch.arange(len(frames)) % 5 == 0
    probs = torch.softmax(logits, -1)
    marginal = probs.mean(0)
    marginal_kl = (probs * (probs.log() - marginal.log())).sum(-1)[held_out].mean().item()
    entropy = -(probs * probs.log()).sum(-1).mean().item()
    uniform = math.log(logits.shape[1])
    log(f"{len(frames)} frames of {ckpt['env_id']}; teacher entropy {entropy:.3f} (uniform {uniform:.3f}); "
        f"held-out KL to the teacher's average policy {marginal_kl:.3f}")
    results = {"command": "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:]),
               "env_id": ckpt["env_id"], "teacher_global_step": ckpt.get("global_step"), "frames": len(frames),
               "held_out_frames": int(held_out.sum()), "teacher_entropy": entropy,
               "held_out_kl_of_teacher_average_policy": marginal_kl, "fits": []}
    for arch, lr, iters in fits:
        results["fits"].append(fit(arch, lr, iters, args.every, args.batch, frames, logits, held_out, args.seed, log))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=2)
    md = [f"# Supervised fit of a {ckpt['env_id']} teacher's policy by each student network\n",
          f"Made by `{results['command']}`. {len(frames)} teacher frames (sampled actions), one in five held out; "
          f"teacher entropy {entropy:.3f}; the KL of the teacher's average policy (a student that ignores the frame) "
          f"is {marginal_kl:.3f} on the held-out frames.\n",
          "| network | lr | features' spread over frames, untrained |", "|---|---|---|"]
    for r in results["fits"]:
        net = r["network"]
        md.append(f"| {r['arch']} ({net['cnn']} {net['channels']}, fc {net['fc']}) | {r['lr']:g} | "
                  f"{r['feature_spread']:.3f} |")
    names = [f"{r['arch']} (lr {r['lr']:g})" for r in results["fits"]]
    md += ["\nHeld-out KL(teacher || student) against Adam iterations:\n", "| iteration | " + " | ".join(names) + " |",
           "|---" * (len(names) + 1) + "|"]
    curves = [{p["iteration"]: p["held_out_kl"] for p in r["curve"]} for r in results["fits"]]
    for it in sorted(set().union(*curves)):
        md.append(f"| {it} | " + " | ".join(f"{c[it]:.3f}" if it in c else "" for c in curves) + " |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    log(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
