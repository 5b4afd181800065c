"""Shared test plumbing: the repo root on sys.path (so `import train_teacher` works) and a runner for the
scripts as a user would call them, in a subprocess with the repo root as working directory."""

import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

torch.set_num_threads(1)


def script_env() -> dict:
    # wide help text (no wrapped flag names), no CUDA surprises, the repo importable from the child; one torch
    # thread: these tiny MLPs run twice as fast without intra-op threads fighting other jobs for 2 cores
    return {**os.environ, "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}


def start_script(script: str, *args: str, **popen_kwargs) -> subprocess.Popen:
    """`python <script> <args>` in the background (for tests that signal the process)."""
    return subprocess.Popen([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=REPO, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)


def run_script(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python <script> <args>` to the end; returns the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` (a tool of ppd_tools) to the end, as run_script does for a script."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)
