"""Bring your own teacher: a Stable-Baselines3 PPO `.zip` (RL Zoo format, with its VecNormalize `.pkl`) or a CleanRL
PPO state dict (`.cleanrl_model`, with its observation statistics as `.npz`), converted into a teacher checkpoint of
these scripts (the dict train_teacher.py saves as model.pt), which every distillation script then reads as --teacher.

    python -m ppd_tools.convert_teacher ppo.zip --env-id Pendulum-v1 --vecnormalize vecnormalize.pkl --output teacher.pt
    python -m ppd_tools.convert_teacher agent.cleanrl_model --env-id BreakoutNoFrameskip-v4 --output breakout.pt
    python ppd_mujoco.py --teacher teacher.pt

The domain follows from --env-id as in the scripts: `<Game>NoFrameskip-v4` or `ALE/<Game>-v5` is Atari (the libraries'
Nature-CNN actor-critic, played with frame skip 4), any other gymnasium env with a flat Box observation is MLP (the
libraries' MLP actor-critic, any hidden sizes, Tanh or ReLU). Neither library needs to be installed; SB3's pickled
VecNormalize is read by an unpickler that runs no code of the file. A bad input is refused with one line (exit 2) and
nothing is written; an existing --output is kept unless --force.
"""

import io
import json
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from typing import Annotated, Optional

if __package__ in (None, ""):  # run as a file (python ppd_tools/convert_teacher.py): the scripts are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym
import numpy as np
import torch
import tyro

from train_teacher import FORMAT_VERSION, UsageError, agent_from_checkpoint, atomic_save, check_env_id, detect_domain
from train_teacher import fail, make_atari_envs, space_dict

FOREIGN_SUFFIXES = (".zip", ".cleanrl_model")
ACTIVATIONS = ("relu", "tanh")  # arch_config["activation"] that the scripts' MLPs build (their ACTIVATIONS)


@dataclass
class Args:
    """Convert a Stable-Baselines3 PPO .zip or a CleanRL PPO .cleanrl_model into a teacher checkpoint of these scripts
    (python -m ppd_tools.convert_teacher SOURCE --env-id ENV --output teacher.pt)."""

    source: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE")]
    """the teacher to convert: a Stable-Baselines3 PPO `.zip` (model.save(), RL Zoo) or a CleanRL PPO `.cleanrl_model`
    (torch.save(agent.state_dict())); MLP policies, or on Atari the Nature-CNN (SB3's CnnPolicy, CleanRL's
    ppo_atari.py Agent)"""
    env_id: Optional[str] = None
    """the env the teacher was trained on (required: neither library records it reliably); `<Game>NoFrameskip-v4` or
    `ALE/<Game>-v5` is Atari, any other gymnasium env with a flat Box observation MLP"""
    vecnormalize: Optional[str] = None
    """Stable-Baselines3 MLP teacher (.zip) only: its VecNormalize statistics (`vecnormalize.pkl`, in RL Zoo next to
    the model); without them the teacher sees raw observations"""
    obs_rms: Optional[str] = None
    """CleanRL MLP teacher (.cleanrl_model) only: a .npz with the `mean` and `var` of the NormalizeObservation wrapper
    it was trained with (ppo_continuous_action.py; they are not in the state dict); without it the teacher sees raw
    observations"""
    output: Optional[str] = None
    """the checkpoint to write (e.g. teacher.pt), to give to the scripts as --teacher; must be given"""
    force: bool = False
    """overwrite an existing --output"""


# ----------------------------------------------------------------------------------------------------
# SB3's VecNormalize and CleanRL's NormalizeObservation statistics, as obs_rms of our format
# ----------------------------------------------------------------------------------------------------
class _Stub:
    """Stands in for every non-numpy class of a pickled VecNormalize (SB3's own, gymnasium's spaces, ...): it keeps
    the pickled attributes, and no code named in the file runs."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class _VecNormalizeUnpickler(pickle.Unpickler):
    """Reads SB3's vecnormalize.pkl without SB3: numpy arrays, dtypes and scalars are rebuilt, any other class is a
    _Stub."""

    NUMPY = ("_reconstruct", "_frombuffer", "scalar", "ndarray", "dtype")  # numpy.core.* / numpy._core.*
    PLAIN = (("collections", "OrderedDict"), ("_codecs", "encode"))  # _codecs.encode: bytes in pickle protocol 2

    def find_class(self, module: str, name: str):
        if (module.split(".")[0] == "numpy" and name in self.NUMPY) or (module, name) in self.PLAIN:
            return super().find_class(module, name)
        return _Stub


def vecnormalize_obs_rms(path: str) -> Optional[dict]:
    """obs_rms of our format from SB3's VecNormalize.save() file, normalizing as SB3 does: clip((x - mean) /
    sqrt(var + epsilon), -clip_obs, clip_obs); None if it did not normalize observations (norm_obs=False)."""
    try:
        with open(path, "rb") as f:
            vec_normalize = _VecNormalizeUnpickler(f).load()
        rms = vec_normalize.obs_rms
        stats = {
            "mean": torch.tensor(np.asarray(rms.mean, np.float64)),
            "var": torch.tensor(np.asarray(rms.var, np.float64)),
            "count": float(rms.count),
            "clip": float(vec_normalize.clip_obs),
            "epsilon": float(vec_normalize.epsilon),
        }
        return stats if vec_normalize.norm_obs else None
    except Exception as e:  # missing, truncated, not a VecNormalize, a Dict observation space, ...
        raise UsageError(
            f"cannot read --vecnormalize '{path}' ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "pass the vecnormalize.pkl written by SB3's VecNormalize.save()"
        )


def npz_obs_rms(path: str) -> dict:
    """obs_rms of our format from a .npz with `mean` and `var` (gymnasium's NormalizeObservation, as CleanRL uses it:
    epsilon 1e-8, then clipped to +-10: our defaults)."""
    try:
        with np.load(path) as f:
            return {
                "mean": torch.tensor(f["mean"].astype(np.float64)),
                "var": torch.tensor(f["var"].astype(np.float64)),
                "count": float(f["count"]) if "count" in f.files else 1.0,
            }
    except Exception as e:
        raise UsageError(
            f"cannot read --obs-rms '{path}' ({type(e).__name__}: {str(e).splitlines()[0][:120]}); pass a "
            ".npz with arrays `mean` and `var`: np.savez(path, mean=rms.mean, var=rms.var) of the "
            "NormalizeObservation's obs_rms"
        )


# ----------------------------------------------------------------------------------------------------
# The libraries' MLP actor-critics
# ----------------------------------------------------------------------------------------------------
def linear_stack(state: dict, prefix: str) -> list:
    """[(weight, bias), ...] of the nn.Sequential `prefix` of Linear layers with a parameter-free activation between
    them (keys prefix.0.*, prefix.2.*, ...), taken out of state; [] if there is none."""
    indices = sorted({int(k[len(prefix) + 1 :].split(".")[0]) for k in state if k.startswith(prefix + ".")})
    if indices != list(range(0, 2 * len(indices), 2)):
        raise ValueError(f"'{prefix}' is not a stack of Linear layers and activations")
    return [(state.pop(f"{prefix}.{i}.weight"), state.pop(f"{prefix}.{i}.bias")) for i in indices]


def sb3_layout(state: dict, data: dict) -> tuple:
    """(actor layers, log_std or None, critic layers, activation) of SB3's ActorCriticPolicy with an MLP extractor
    (PPO's and A2C's MlpPolicy: separate pi and vf nets, a parameter-free Flatten as features extractor)."""
    if data.get("use_sde"):
        raise UsageError(
            "the Stable-Baselines3 teacher uses gSDE (use_sde=True), whose noise these scripts cannot "
            "represent; use a teacher trained without gSDE"
        )
    # "<class '...ReLU'>"; absent: SB3's default
    activation_fn = str((data.get("policy_kwargs") or {}).get("activation_fn", "Tanh"))
    activation = activation_fn.rstrip("'>").split(".")[-1].lower()
    if activation not in ACTIVATIONS:
        raise UsageError(
            f"the Stable-Baselines3 teacher's activation is {activation_fn}; these scripts read "
            f"{', '.join(ACTIVATIONS)}"
        )
    actor = linear_stack(state, "mlp_extractor.policy_net") + [
        (state.pop("action_net.weight"), state.pop("action_net.bias"))
    ]
    critic = linear_stack(state, "mlp_extractor.value_net") + [
        (state.pop("value_net.weight"), state.pop("value_net.bias"))
    ]
    return actor, state.pop("log_std", None), critic, activation


def cleanrl_layout(state: dict, data: dict) -> tuple:
    """The same of CleanRL's MLP Agents: ppo_continuous_action.py (actor_mean, actor_logstd, critic) and ppo.py (actor,
    critic), 64-64 with Tanh by default."""
    if "network.0.weight" in state:
        raise UsageError(
            "this is CleanRL's ppo_atari (Nature-CNN) teacher: pass the Atari --env-id it was trained on "
            "(e.g. BreakoutNoFrameskip-v4)"
        )
    continuous = "actor_logstd" in state
    actor = linear_stack(state, "actor_mean" if continuous else "actor")
    return actor, state.pop("actor_logstd", None), linear_stack(state, "critic"), "tanh"


def mlp_teacher(
    state: dict, data: dict, path: str, kind: str, env_id: str, vecnormalize: Optional[str], obs_rms: Optional[str]
) -> dict:
    """An SB3 or CleanRL MLP actor-critic as our MLP teacher, checked against env_id's spaces, with the observation
    statistics it was trained with (without them: raw observations)."""
    sb3 = kind == "Stable-Baselines3"
    try:
        actor, log_std, critic, activation = (sb3_layout if sb3 else cleanrl_layout)(state, data)
        if not actor or not critic or state:
            raise ValueError(
                f"unexpected parameters {', '.join(sorted(state)[:4])}" if state else "no actor or critic layers"
            )
    except (KeyError, ValueError) as e:
        raise UsageError(
            f"'{path}' is not a {kind} PPO MLP policy of the layout these scripts read ({e}); "
            "foreign teachers are the library's MLP actor-critic (any hidden sizes, Tanh or ReLU)"
        )

    env = gym.make(env_id)
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if (
        not isinstance(obs_space, gym.spaces.Box)
        or len(obs_space.shape) != 1
        or not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete))
    ):
        raise UsageError(
            f"{env_id} has spaces {obs_space}, {action_space}; foreign teachers need flat Box "
            "observations and Box or Discrete actions"
        )
    continuous = isinstance(action_space, gym.spaces.Box)
    obs_dim, n_out = obs_space.shape[0], int(np.prod(action_space.shape)) if continuous else int(action_space.n)
    if (log_std is not None) != continuous:
        raise UsageError(
            f"'{path}' holds a {'Gaussian' if log_std is not None else 'categorical'} policy, {env_id} "
            f"has action space {action_space}; pass the --env-id it was trained on"
        )
    dims = (actor[0][0].shape[1], actor[-1][0].shape[0])
    if dims != (obs_dim, n_out) or (continuous and log_std.numel() != n_out):
        raise UsageError(
            f"'{path}' maps {dims[0]} observations to {dims[1]} action "
            f"{'dims' if continuous else 'logits'}, {env_id} has {obs_dim} and {n_out}; pass the --env-id "
            "it was trained on"
        )
    hidden = [w.shape[0] for w, _ in actor[:-1]]
    if [w.shape[0] for w, _ in critic[:-1]] != hidden:
        raise UsageError(
            f"'{path}' has actor hidden sizes {hidden} and critic {[w.shape[0] for w, _ in critic[:-1]]}; "
            "these scripts' networks have one size for both"
        )

    rms = vecnormalize_obs_rms(vecnormalize) if vecnormalize else npz_obs_rms(obs_rms) if obs_rms else None
    if rms is None:  # raw observations: normalize() is the identity (no epsilon, no clipping)
        rms = {
            "mean": torch.zeros(obs_dim, dtype=torch.float64),
            "var": torch.ones(obs_dim, dtype=torch.float64),
            "count": 0.0,
            "clip": float("inf"),
            "epsilon": 0.0,
        }
    elif tuple(rms["mean"].shape) != (obs_dim,) or tuple(rms["var"].shape) != (obs_dim,):
        raise UsageError(
            f"the statistics in '{vecnormalize or obs_rms}' are for observations of shape "
            f"{tuple(rms['mean'].shape)}, {env_id} has ({obs_dim},); pass the ones saved with this "
            "teacher"
        )
    if sb3 and not vecnormalize:  # RL Zoo keeps them in <model folder>/<env>/vecnormalize.pkl
        stem = os.path.splitext(path)[0]
        found = [
            p
            for p in (os.path.join(stem, "vecnormalize.pkl"), os.path.join(os.path.dirname(path), "vecnormalize.pkl"))
            if os.path.isfile(p)
        ]
        if found:
            print(
                f"warning: no --vecnormalize, but {found[0]} exists; without it the teacher sees raw observations",
                file=sys.stderr,
            )
    if continuous and not sb3 and not obs_rms:
        print(
            "warning: CleanRL's ppo_continuous_action.py trains on normalized observations whose statistics are not "
            "in its state dict; without --obs-rms the teacher sees raw observations",
            file=sys.stderr,
        )

    def sequential(layers: list) -> dict:  # our mlp(): Linear layers at 0, 2, 4, ...
        return {f"{2 * i}.{name}": t for i, (w, b) in enumerate(layers) for name, t in (("weight", w), ("bias", b))}

    actor_state = {f"body.{k}": v for k, v in sequential(actor).items()}
    if continuous:
        actor_state["log_std"] = log_std.reshape(1, n_out)
    ckpt = {
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "domain": "mlp",
        "arch": kind.lower(),
        "arch_config": {"hidden": hidden, "activation": activation},
        "actor": actor_state,
        "critic": sequential(critic),
        "obs_shape": [obs_dim],
        "action_space": space_dict(action_space),
        "obs_rms": rms,
        "env_config": {"torso_mass_scale": 1.0, "mass_randomization": 0.0},
        "args": {"imported_from": path, "vecnormalize": vecnormalize, "obs_rms": obs_rms},
        "global_step": None,
        "eval": None,
    }
    try:
        agent_from_checkpoint(ckpt)  # what is left to mismatch (a hidden layer that does not chain) shows here
    except RuntimeError as e:
        raise UsageError(
            f"'{path}' does not fit an MLP of hidden sizes {hidden} ({str(e).splitlines()[-1].strip()[:160]})"
        )
    return ckpt


# ----------------------------------------------------------------------------------------------------
# The libraries' Atari actor-critic: the Nature-CNN
# ----------------------------------------------------------------------------------------------------
def nature_cnn_teacher(state: dict, path: str, kind: str, env_id: str) -> dict:
    """Both libraries' default Atari actor-critic (SB3's CnnPolicy, CleanRL's ppo_atari.py) is the Nature-CNN (conv
    32-64-64, fc 512, ReLU) on uint8 frames divided by 255, one trunk shared by a policy head and a value head: our
    NatureCNN with those sizes; the trunk is copied into our separate actor and critic (SB3 with
    share_features_extractor=False: its own two trunks). Played with frame skip 4, the libraries' default; checked
    against env_id's frames and actions."""
    if kind == "Stable-Baselines3":  # features_extractor is pi_features_extractor; vf_... is the same unless not shared
        pi, vf = (
            "pi_features_extractor" if "pi_features_extractor.cnn.0.weight" in state else "features_extractor",
            "vf_features_extractor" if "vf_features_extractor.cnn.0.weight" in state else "features_extractor",
        )
        names = {
            "actor": {
                "convs.0": f"{pi}.cnn.0",
                "convs.2": f"{pi}.cnn.2",
                "convs.4": f"{pi}.cnn.4",
                "fc.0": f"{pi}.linear.0",
                "head": "action_net",
            },
            "critic": {
                "convs.0": f"{vf}.cnn.0",
                "convs.2": f"{vf}.cnn.2",
                "convs.4": f"{vf}.cnn.4",
                "fc.0": f"{vf}.linear.0",
                "head": "value_net",
            },
        }
        ignored = ("features_extractor.", "pi_features_extractor.", "vf_features_extractor.")  # the same tensors again
    else:  # ppo_atari.py: network = conv, ReLU, conv, ReLU, conv, ReLU, Flatten, Linear, ReLU; actor; critic
        trunk = {"convs.0": "network.0", "convs.2": "network.2", "convs.4": "network.4", "fc.0": "network.7"}
        names, ignored = {"actor": {**trunk, "head": "actor"}, "critic": {**trunk, "head": "critic"}}, ()
    try:
        nets = {
            net: {
                f"body.{ours}.{t}" if net == "actor" else f"{ours}.{t}": state[f"{theirs}.{t}"]
                for ours, theirs in layers.items()
                for t in ("weight", "bias")
            }
            for net, layers in names.items()
        }
        used = {f"{theirs}.{t}" for layers in names.values() for theirs in layers.values() for t in ("weight", "bias")}
        left = sorted(k for k in state if k not in used and not k.startswith(ignored))
        if left:
            raise KeyError(f"unexpected parameters {', '.join(left[:4])}")
    except KeyError as e:
        raise UsageError(
            f"'{path}' is not a {kind} PPO Nature-CNN policy of the layout these scripts read "
            f"({e.args[0]}); foreign Atari teachers are the library's default CnnPolicy / ppo_atari.py "
            "Agent"
        )
    actor = nets["actor"]
    ckpt = {
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "domain": "atari",
        "arch": kind.lower(),
        "arch_config": {
            "cnn": "nature",
            "channels": [int(actor[f"body.convs.{i}.weight"].shape[0]) for i in (0, 2, 4)],
            "fc": int(actor["body.fc.0.weight"].shape[0]),
        },
        "actor": actor,
        "critic": nets["critic"],
        "obs_shape": [int(actor["body.convs.0.weight"].shape[1]), 84, 84],
        "action_space": space_dict(gym.spaces.Discrete(int(actor["body.head.weight"].shape[0]))),
        "obs_rms": None,
        "env_config": {
            "frame_skip": 4,
            "procgen_num_levels": 200,
            "procgen_start_level": 0,
            "procgen_distribution_mode": "easy",
        },
        "args": {"imported_from": path},
        "global_step": None,
        "eval": None,
    }
    try:
        agent_from_checkpoint(ckpt)  # what is left to mismatch (a layer that does not chain) shows here
    except RuntimeError as e:
        raise UsageError(
            f"'{path}' does not fit a Nature-CNN on 84x84 frames ({str(e).splitlines()[-1].strip()[:160]})"
        )
    envs = make_atari_envs(env_id, 1, 0, ckpt["env_config"]["frame_skip"])  # the frames and actions the scripts give
    obs_shape, action_space = envs.single_observation_space.shape, envs.single_action_space
    envs.close()
    if tuple(ckpt["obs_shape"]) != tuple(obs_shape):
        raise UsageError(
            f"'{path}' expects frames of shape {tuple(ckpt['obs_shape'])}, {env_id} gives "
            f"{tuple(obs_shape)}; pass the --env-id it was trained on"
        )
    if ckpt["action_space"] != space_dict(action_space):
        raise UsageError(
            f"'{path}' has action space {ckpt['action_space']}, {env_id} has {space_dict(action_space)}; "
            "pass the --env-id it was trained on"
        )
    return ckpt


# ----------------------------------------------------------------------------------------------------
# The conversion
# ----------------------------------------------------------------------------------------------------
def import_teacher(
    path: str, env_id: Optional[str], vecnormalize: Optional[str] = None, obs_rms: Optional[str] = None
) -> dict:
    """A Stable-Baselines3 PPO .zip (RL Zoo format) or a CleanRL PPO .cleanrl_model (torch.save(agent.state_dict()))
    as a checkpoint dict of our format, checked against env_id: MLP policies, or on Atari the Nature-CNN.
    vecnormalize: the SB3 teacher's VecNormalize file; obs_rms: a .npz of a CleanRL teacher's observation statistics;
    without them the teacher sees raw observations. Raises UsageError with a one-line reason."""
    if not path.endswith(FOREIGN_SUFFIXES):
        raise UsageError(
            f"'{path}' is neither a Stable-Baselines3 .zip nor a CleanRL .cleanrl_model; a checkpoint of "
            "these scripts (model.pt) needs no conversion: pass it to the scripts' --teacher as it is"
        )
    sb3 = path.endswith(".zip")
    kind = "Stable-Baselines3" if sb3 else "CleanRL"
    if env_id is None:
        raise UsageError(
            f"a {kind} teacher does not record its env reliably; pass --env-id (the env '{path}' was trained on)"
        )
    check_env_id(env_id)
    domain = detect_domain(env_id)
    if domain == "procgen":
        raise UsageError(
            f"foreign teachers are read for flat-observation envs (MLP policies) and Atari (Nature-CNN), "
            f"not {env_id}; train a Procgen teacher with train_teacher.py"
        )
    if domain == "atari" and (vecnormalize or obs_rms):
        raise UsageError("--vecnormalize and --obs-rms are for MLP teachers; an Atari teacher sees raw frames")
    if (vecnormalize and not sb3) or (obs_rms and sb3):
        raise UsageError(
            "--vecnormalize goes with a Stable-Baselines3 teacher (.zip), --obs-rms with a CleanRL one (.cleanrl_model)"
        )
    if not os.path.isfile(path):
        raise UsageError(f"teacher '{path}' does not exist")
    try:
        if sb3:  # model.save(): a JSON `data` (partly cloudpickled: not used) and the policy's state dict
            with zipfile.ZipFile(path) as archive:
                data = json.loads(archive.read("data"))
                state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
        else:
            data, state = {}, torch.load(path, map_location="cpu", weights_only=True)
        state = dict(state)
    except Exception as e:
        raise UsageError(
            f"cannot read {kind} teacher '{path}' ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "pass "
            + (
                "a model .zip written by SB3's model.save()"
                if sb3
                else "torch.save(agent.state_dict()) of CleanRL's PPO"
            )
        )
    if domain == "atari":
        return nature_cnn_teacher(state, path, kind, env_id)
    return mlp_teacher(state, data, path, kind, env_id, vecnormalize, obs_rms)


def describe(ckpt: dict) -> str:
    """'MLP 64-64 tanh, VecNormalize statistics' / 'Nature-CNN 32-64-64 fc 512, 6 actions, frame skip 4'."""
    config = ckpt["arch_config"]
    if ckpt["domain"] == "atari":
        return (
            f"Nature-CNN {'-'.join(map(str, config['channels']))} fc {config['fc']}, "
            f"{ckpt['action_space']['n']} actions, frame skip {ckpt['env_config']['frame_skip']}"
        )
    stats = (
        "VecNormalize statistics"
        if ckpt["args"]["vecnormalize"]
        else "NormalizeObservation statistics"
        if ckpt["args"]["obs_rms"]
        else "raw observations"
    )
    return f"MLP {'-'.join(map(str, config['hidden']))} {config['activation']}, {stats}"


def main(args: Args) -> dict:
    """Convert args.source and write it to args.output; returns the checkpoint dict. A bad input: one line, exit 2,
    nothing written."""
    try:
        if not args.output:
            raise UsageError("pass --output, the checkpoint to write (e.g. --output teacher.pt)")
        if args.output.endswith(FOREIGN_SUFFIXES):
            raise UsageError(
                f"--output '{args.output}' would be read as a Stable-Baselines3 / CleanRL file; name the "
                "checkpoint e.g. teacher.pt"
            )
        if os.path.exists(args.output) and not args.force:
            raise UsageError(
                f"--output '{args.output}' already exists; pass another --output, or --force to overwrite it"
            )
        ckpt = import_teacher(args.source, args.env_id, args.vecnormalize, args.obs_rms)
        try:
            os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
            atomic_save(ckpt, args.output)
        except (OSError, RuntimeError) as e:
            raise UsageError(
                f"cannot write --output '{args.output}' ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}); pass a writable path"
            )
    except UsageError as e:
        fail(str(e))
    scripts = "ppd_atari.py" if ckpt["domain"] == "atari" else "ppd_mujoco.py"
    kind = {"stable-baselines3": "Stable-Baselines3", "cleanrl": "CleanRL"}[ckpt["arch"]]
    print(
        f"wrote {args.output}: the {kind} teacher of {ckpt['env_id']} ({describe(ckpt)}); distill from it with "
        f"--teacher {args.output} ({scripts}, student_distill.py, teacher_distill.py)"
    )
    return ckpt


if __name__ == "__main__":
    main(tyro.cli(Args, prog="python -m ppd_tools.convert_teacher"))
