"""Device selection, precision, seeding and determinism."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from pathlib import Path

import numpy as np
import torch


def select_device(spec: str) -> torch.device:
    """``train.device`` as a torch device; a CUDA device on a machine without one is a ConfigError naming the key."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from crelu.config.checks import check_device

    check_device(spec)
    return torch.device(spec)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on CPU unless asked."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    raise ValueError(f"train.amp must be auto, bf16 or off, got {amp!r}")


def use_channels_last(setting: str, device: torch.device) -> bool:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.channels_last must be auto, on or off, got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def data_generator(seed: int) -> torch.Generator:
    """CPU generator for data order and augmentation, derived from (not equal to) the training seed."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xDA7A]).generate_state(1)[0]))


def rng_state(data_gen: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": data_gen.get_state(),
    }


def set_rng_state(state: dict, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_gen.set_state(state["data"])


def describe_device(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "hostname": socket.gethostname(), "threads": torch.get_num_threads()}


def git_info(start: Path | None = None) -> dict:
    cwd = start or Path(__file__).resolve().parent
    info: dict = {"commit": None, "dirty": None}
    with contextlib.suppress(Exception):
        run = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, text=True, timeout=5)  # noqa: E731
        out = run("rev-parse", "HEAD")
        if out.returncode == 0:
            info["commit"] = out.stdout.strip()
            info["dirty"] = bool(run("status", "--porcelain", "--untracked-files=no").stdout.strip())
    return info
