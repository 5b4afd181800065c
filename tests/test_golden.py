"""Golden outputs of short CPU runs of every script, in every domain it serves (issue 16: a refactoring changes no
number). Each case runs one script in-process for a few rollouts and compares, bit for bit, a sha256 of its final
parameters and its eval.json (without the command line; temporary paths replaced) with tests/golden/<case>.json.
The SB3 case converts the teacher's .zip with ppd_tools/convert_teacher.py first and distills from the .pt; its golden
file was recorded when the scripts imported the .zip themselves, so only the teacher's file name differs (.pt for .zip).
A change of numbers is its own named commit, with the golden files remade by

    python tests/test_golden.py            # rewrites tests/golden/*.json from the scripts as they are
"""

import hashlib
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import REPO  # noqa: E402  (it puts the repository on sys.path and sets one torch thread)

import ppd_atari  # noqa: E402
import ppd_mujoco  # noqa: E402
import ppd_procgen  # noqa: E402
import student_distill  # noqa: E402
import teacher_distill  # noqa: E402
import train_teacher  # noqa: E402

GOLDEN = os.path.join(REPO, "tests", "golden")
MLP = {"num_envs": 2, "num_steps": 64, "minibatch_size": 64, "total_timesteps": 256, "eval_episodes": 2}
PIXELS = {"num_envs": 2, "num_steps": 32, "minibatch_size": 32, "total_timesteps": 64, "eval_episodes": 2}
BASELINE = {"num_envs": 2, "num_steps": 5, "total_timesteps": 100, "eval_episodes": 2}
ATARI_EVAL = {"eval_max_frames": 400}  # evaluation games of 100 steps at frame skip 4
CASES = {  # name: (script module, Args fields); "<atari>", "<procgen>", "<sb3-hopper>": teachers made by teacher()
    "train_teacher-cartpole": (train_teacher, {"env_id": "CartPole-v1", **MLP}),
    "train_teacher-hopper": (train_teacher, {"env_id": "Hopper-v5", **MLP}),
    "train_teacher-atari": (train_teacher, {"env_id": "PongNoFrameskip-v4", "arch": "smaller", **PIXELS, **ATARI_EVAL}),
    "train_teacher-procgen": (train_teacher, {"env_id": "procgen:coinrun", "arch": "smaller", **PIXELS}),
    "ppd_mujoco-hopper": (ppd_mujoco, {"teacher": ("teachers/Hopper-v5.pt",), **MLP}),
    "ppd_mujoco-variants": (ppd_mujoco, {"teacher": ("teachers/CartPole-v1.pt", "teachers/CartPole-v1.pt"),
                                         "teacher_weight": (3.0, 1.0), "distill_coef_schedule": "linear",
                                         "teacher_noise_std": 0.01, "student_arch": "smaller", **MLP}),
    "ppd_mujoco-sb3": (ppd_mujoco, {"teacher": ("<sb3-hopper>",), "env_id": "Hopper-v5", **MLP}),
    "ppd_atari": (ppd_atari, {"teacher": ("<atari>",), "student_arch": "smaller", **PIXELS, **ATARI_EVAL}),
    "ppd_procgen": (ppd_procgen, {"teacher": ("<procgen>",), "student_arch": "smaller", **PIXELS}),
    "student_distill-hopper": (student_distill, {"teacher": "teachers/Hopper-v5.pt", **BASELINE}),
    "student_distill-atari": (student_distill, {"teacher": "<atari>", "student_arch": "smaller", **BASELINE,
                                                **ATARI_EVAL}),
    "teacher_distill-hopper": (teacher_distill, {"teacher": "teachers/Hopper-v5.pt", **BASELINE}),
    "teacher_distill-procgen": (teacher_distill, {"teacher": "<procgen>", "student_arch": "smaller", **BASELINE}),
}


def teacher(name: str, folder: str) -> str:
    """A teacher file that is not shipped: a tiny untrained pixel agent, or an SB3 PPO Hopper policy (.zip) converted
    by ppd_tools/convert_teacher.py (.pt)."""
    path = os.path.join(folder, name.strip("<>") + ".pt")
    if not os.path.exists(path):
        if "sb3" in name:
            from test_teacher_import import SB3_CASES, SB3Teacher

            import pathlib

            from ppd_tools import convert_teacher

            SB3Teacher(pathlib.Path(folder), "Hopper-v5", *SB3_CASES["Hopper-v5"])
            sb3_zip = path.removesuffix(".pt") + ".zip"
            os.replace(os.path.join(folder, "Hopper-v5.zip"), sb3_zip)
            convert_teacher.main(convert_teacher.Args(sb3_zip, env_id="Hopper-v5", output=path))
        else:
            from test_ppd_pixels import save_tiny_teacher

            save_tiny_teacher(name.strip("<>"), path)
    return path


def run_case(name: str, folder: str) -> dict:
    """{"params_sha256", "eval"} of the case's run, made in `folder` (the working directory is the repository's)."""
    module, fields = CASES[name]
    fields = {k: (tuple(teacher(t, folder) if t.startswith("<") else t for t in v) if isinstance(v, tuple) and k == "teacher"
                  else teacher(v, folder) if isinstance(v, str) and v.startswith("<") else v) for k, v in fields.items()}
    args = module.Args(output_dir=folder, run_name=name, cuda=False, **fields)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        module.main(args)
    finally:
        os.chdir(cwd)
    run_dir = os.path.join(folder, name)
    model = torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)
    digest = hashlib.sha256()
    for net in ("actor", "critic"):
        for key in sorted(model[net]):
            digest.update(key.encode() + model[net][key].cpu().numpy().tobytes())
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    evaluation.pop("command")
    text = json.dumps(evaluation, sort_keys=True).replace(os.path.realpath(folder), "<tmp>").replace(folder, "<tmp>")
    return {"params_sha256": digest.hexdigest(), "eval": json.loads(text)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", list(CASES))
def test_short_runs_give_the_golden_numbers_bit_for_bit(name, folder):
    with open(os.path.join(GOLDEN, f"{name}.json")) as f:
        golden = json.load(f)
    if name == "ppd_mujoco-sb3":  # recorded from the .zip itself; now from the .pt that convert_teacher made of it
        golden["eval"]["teacher_checkpoint"] = golden["eval"]["teacher_checkpoint"].replace(".zip", ".pt")
        golden["eval"]["teacher_checkpoints"] = [path.replace(".zip", ".pt")
                                                 for path in golden["eval"]["teacher_checkpoints"]]
        assert golden["eval"]["teacher_checkpoints"] == ["<tmp>/sb3-hopper.pt"]
    got = run_case(name, folder)
    assert got["eval"] == golden["eval"]
    assert got["params_sha256"] == golden["params_sha256"]


if __name__ == "__main__":  # remake the golden files: only in a commit that changes numbers on purpose, and says why
    import tempfile

    os.makedirs(GOLDEN, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            with open(os.path.join(GOLDEN, f"{case}.json"), "w") as f:
                json.dump(run_case(case, tmp), f, indent=1, sort_keys=True)
                f.write("\n")
            print("wrote", case, flush=True)
