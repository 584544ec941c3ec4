"""Data-parallel training (DDP): one process per GPU, on one node or many; a no-op in a single process.

Launching (the trainer calls :func:`setup` itself; nothing else changes in the command line):

* one node, 8 GPUs::

      torchrun --standalone --nproc-per-node 8 -m crelu.train experiment=table4/crelu_all

* several nodes, torchrun on each node (same command everywhere, ``--node-rank`` 0..N-1)::

      torchrun --nnodes 2 --nproc-per-node 8 --node-rank $NODE --master-addr HOST0 --master-port 29500 \\
          -m crelu.train experiment=table4/crelu_all

* SLURM: ``srun`` with one task per GPU (``--ntasks-per-node=8 --gpus-per-node=8``), or the Hydra submitit
  launcher with ``hydra.launcher.tasks_per_node=8 hydra.launcher.gpus_per_node=8 hydra.launcher.nodes=2``.

Environment variables read:

* torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; DDP is on when
  ``WORLD_SIZE > 1``;
* without ``RANK``, an ``srun`` step's ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` are used
  when ``SLURM_STEP_NUM_TASKS > 1`` (the batch script itself, outside ``srun``, stays one process);
  ``MASTER_ADDR`` defaults to the first host of ``SLURM_JOB_NODELIST`` (``scontrol``) and ``MASTER_PORT`` to a
  port derived from ``SLURM_JOB_ID`` (set both to override);
* ``CRELU_DDP_BACKEND`` overrides the backend (default: ``nccl`` on CUDA, ``gloo`` on CPU);
* ``CRELU_DDP=0`` ignores all of the above (one process per task, no process group).

A Hydra multirun under torchrun runs the same jobs in every rank, one after the other (pass
``hydra.sweep.dir=...`` so the ranks agree on the sweep folder); SLURM array sweeps give each job its own
``srun`` step instead.

What it does (the trainer's few calls; every helper returns its input unchanged in a single process, so
single-process runs are byte-identical with or without this module):

* rank r uses ``cuda:(LOCAL_RANK mod device count)``; ``train.batch_size`` is the **global** batch, split
  evenly over ranks (it must be divisible by the world size; ``train.drop_last`` must be true);
* data: every rank draws the same epoch plan from the same data generator and takes its contiguous share of
  each global batch (``DataBundle.shard``, :mod:`crelu.data.sharding`).  Evaluation sets
  are split into contiguous blocks; test logits are gathered back in order;
* metrics: loss sums, error counts and example counts are all-reduced before they are recorded;
* only rank 0 writes ``run.json``, checkpoints and logits, prints, and opens wandb; every rank reads the run
  directory (a shared filesystem is assumed across nodes) to skip or resume;
* dropout RNG: rank r > 0 seeds torch with a value derived from (seed, r); rank 0 keeps ``train.seed``.  DDP
  broadcasts rank 0's initial weights.

Limitations: a resumed run restores rank 0's RNG state on every rank (dropout masks then coincide across
ranks); a *mid-epoch* resume restores rank 0's running sums, so that one epoch's logged train loss/error is
approximate (weights, data order and every later number are exact).  A preemption signal must reach every
rank (SLURM signals all tasks of a step), or the others wait in the next collective.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

NO_LOGGER = SimpleNamespace(name="none")  # logger config for ranks > 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _slurm_env() -> bool:
    """Export torchrun-style variables from an ``srun`` step's (submitit too) with several tasks.  True if so."""
    if "RANK" in os.environ or _env_int("SLURM_STEP_NUM_TASKS", 1) <= 1 or "SLURM_PROCID" not in os.environ:
        return False
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_STEP_NUM_TASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST", "localhost")
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, timeout=30)
            os.environ["MASTER_ADDR"] = out.stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            os.environ["MASTER_ADDR"] = nodes.split(",")[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + _env_int("SLURM_JOB_ID", 0) % 20000))
    return True


def setup(device_spec: str = "auto") -> bool:
    """Join the process group described by the environment (idempotent).  True when running distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if os.environ.get("CRELU_DDP", "").lower() in ("0", "off", "false", "no"):
        return False
    _slurm_env()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 or not dist.is_available():
        return False
    use_cuda = torch.cuda.is_available() and device_spec != "cpu"
    backend = os.environ.get("CRELU_DDP_BACKEND") or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0) % torch.cuda.device_count())
    dist.init_process_group(backend=backend, init_method="env://", rank=_env_int("RANK", 0), world_size=world)
    atexit.register(cleanup)
    log.info("DDP: rank %d of %d (%s)", rank(), world, backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (registered with atexit by :func:`setup`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` (mod the visible devices) under DDP on CUDA, else ``device``."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def rank_seed(seed: int) -> int:
    """``seed`` on rank 0; a derived seed on other ranks (independent dropout masks)."""
    r = rank()
    return seed if r == 0 else int(np.random.SeedSequence([seed, r, 0xDD9]).generate_state(1)[0])


def main_only(record):
    """Under DDP: note ``world_size`` in the record's ``env``; on ranks > 0 ``record.save()`` does nothing."""
    if is_distributed():
        record.data["env"]["world_size"] = world_size()
        if not is_main():
            record.save = lambda: None
    return record


def _comm_device(t: torch.Tensor) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device


def reduce_sums(loss_sum: torch.Tensor, wrong: torch.Tensor, n: int):
    """All-reduce (sum) an engine's loss sum, error count and example count; unchanged in one process."""
    if not is_distributed():
        return loss_sum, wrong, n
    packed = torch.stack([loss_sum.double(), wrong.double(), torch.tensor(float(n), device=loss_sum.device,
                                                                           dtype=torch.float64)])
    out = packed.to(_comm_device(packed))
    dist.all_reduce(out)
    out = out.to(loss_sum.device)
    return out[0], out[1].round().to(wrong.dtype), int(out[2].round().item())


def reduce_counts(counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All-reduce (sum) a dict of scalar counts (same keys on every rank); unchanged in one process."""
    if not is_distributed() or not counts:
        return counts
    keys = sorted(counts)
    packed = torch.stack([torch.as_tensor(counts[k]).double().cpu() for k in keys])
    out = packed.to(_comm_device(packed))
    dist.all_reduce(out)
    return {k: v for k, v in zip(keys, out.cpu().unbind(0))}


def all_gather_cat(t: torch.Tensor | None) -> torch.Tensor | None:
    """Concatenate every rank's ``t`` (rows may differ in number) in rank order; ``t`` in one process."""
    if t is None or not is_distributed():
        return t
    dev = _comm_device(t)
    local = t.to(dev)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=dev))
    rows = [int(s.item()) for s in sizes]
    pad = local.new_zeros((max(rows) - local.shape[0], *local.shape[1:]))
    bufs = [local.new_empty((max(rows), *local.shape[1:])) for _ in rows]
    dist.all_gather(bufs, torch.cat([local, pad]))
    return torch.cat([b[:r] for b, r in zip(bufs, rows)]).to(t.device)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` for training under DDP; ``model`` itself in one process."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def shard_bundle(data):
    """This rank's share of a :class:`~crelu.data.module.DataBundle` (``data.shard``); unchanged in one process."""
    if not is_distributed():
        return data
    return data.shard(rank(), world_size())
