"""Experiment loggers: ``none`` and ``wandb`` (offline by default), plus a reader for offline wandb runs.

How a run appears in wandb (everything is derived from the run's record, nothing is named by hand):

* **id**: a digest of the absolute run directory and the *attempt* (the trainer passes the record's
  ``started_at``, which a resume keeps and ``output.overwrite=true`` renews).  So a resumed attempt continues its
  wandb run, while Single's phase 1 and phase 2 (two directories), an overwritten run and the same command under
  another output root each get their own.
* **group**: ``<profile>/<table>/<row>/<dataset>``, so smoke and paper runs never share a group.
* **name**: words a person reads in the run table, e.g. ``table1 crelu cifar10 fold 0 seed 0`` or
  ``table1 crelu cifar10 single phase2 seed 0`` (profiles other than ``paper`` are appended in brackets).
* **job_type**: the protocol (``kfold``, ``single-phase1``, ...); **tags**: table, row, dataset, protocol, profile,
  ``fold<k>`` and ``logger.tags``.
* **config**: flat keys for dashboard filters and parallel-coordinates panels (``profile``, ``table``, ``row``,
  ``dataset``, ``protocol``, ``phase``, ``fold``, ``seed``, ``lr``, ``run_key``, ``run_dir``) and the whole
  resolved config nested under ``config``.
* **summary**: the run record's ``final`` block under the same names (``test_error``, ``train_eval_loss``, ...).

Offline runs land in ``<logger.dir>/wandb/offline-run-<time>-<id>/``; ``make wandb-sync PROFILE=...``
(``scripts/wandb_sync.py``) uploads those of one profile, using :func:`read_offline_run` to tell them apart.

``logger.mode=online`` without a reachable server does not stall a job: the server is probed first (a few
seconds at most), ``wandb.init`` is bounded by ``WANDB_INIT_TIMEOUT`` (default 20 s), and on failure the run is
logged offline instead, with one warning line.  Any other wandb failure (import, init, log) is a warning too:
training never stops because of logging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_INIT_TIMEOUT_S = 20.0  # wandb's own default is 90 s (and retries), ~100 s per job without a network
PROBE_TIMEOUT_S = 3.0
DEFAULT_BASE_URL = "https://api.wandb.ai"


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


# --------------------------------------------------------------------------------------------------- identity


def _read_started_at(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("started_at")
    except (OSError, ValueError):
        return None


def default_run_dir(meta: dict[str, Any], run_key: str, config: dict[str, Any]) -> Path | None:
    """The run directory a config trains in (``output.run_dir`` or ``output.root/<profile>/<run key>``)."""
    out = (config or {}).get("output") or {}
    if out.get("run_dir"):
        return Path(out["run_dir"])
    if out.get("root"):
        profile = meta.get("profile") or ((config.get("experiment") or {}).get("profile")) or "paper"
        return Path(out["root"]) / profile / run_key
    return None


def wandb_id(run_dir: str | os.PathLike | None, attempt: str | None, run_key: str = "") -> str:
    """16-hex wandb run id: unique per (absolute run directory, attempt), the same for every resume of it."""
    where = str(Path(run_dir).resolve()) if run_dir is not None else f"key:{run_key}"
    return hashlib.sha1(f"{where}|{attempt or ''}".encode()).hexdigest()[:16]


def run_group(meta: dict[str, Any]) -> str:
    table = meta.get("table") or "adhoc"
    row = meta.get("row") or meta.get("name")
    return f"{meta.get('profile') or 'paper'}/{table}/{row}/{meta['dataset']}"


def run_name(meta: dict[str, Any]) -> str:
    """``table1 crelu cifar10 fold 0 seed 0``, ``table1 crelu cifar10 single phase1 seed 0``, ..."""
    parts = [meta["table"]] if meta.get("table") else []
    parts += [meta.get("row") or meta.get("name") or "run", meta["dataset"]]
    proto = meta.get("protocol") or "full"
    if proto == "kfold" and meta.get("fold") is not None:
        parts.append(f"fold {meta['fold']}")
    else:
        parts.append(proto)
        if meta.get("phase"):
            parts.append(str(meta["phase"]))
    parts.append(f"seed {meta.get('seed', 0)}")
    name = " ".join(str(p) for p in parts)
    profile = meta.get("profile") or "paper"
    return name if profile == "paper" else f"{name} [{profile}]"


def run_config(meta: dict[str, Any], run_key: str, config: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """Flat keys for dashboards + the whole resolved config nested under ``config``."""
    optim = (config or {}).get("optim") or {}
    return {
        "profile": meta.get("profile"),
        "table": meta.get("table"),
        "row": meta.get("row") or meta.get("name"),
        "dataset": meta.get("dataset"),
        "protocol": meta.get("protocol"),
        "phase": meta.get("phase"),
        "fold": meta.get("fold"),
        "seed": meta.get("seed"),
        "lr": optim.get("lr"),
        "run_key": run_key,
        "run_dir": str(run_dir) if run_dir is not None else None,
        "config": config,
    }


# ------------------------------------------------------------------------------------------------ the logger


def _server_unreachable(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``base_url`` cannot be reached with a plain TCP connect, or None if it can (or a proxy is set)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None  # the connection goes through a proxy: let wandb try
    url = urlparse(base_url)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


class WandbLogger(NullLogger):
    def __init__(
        self,
        cfg,
        meta: dict[str, Any],
        run_key: str,
        config: dict[str, Any],
        *,
        run_dir: str | os.PathLike | None = None,
        attempt: str | None = None,
    ) -> None:
        self.run = None
        self.mode: str | None = None
        try:
            import wandb
        except Exception as e:  # logging must never take training down
            self._warn("import", e)
            return
        run_dir = Path(run_dir) if run_dir is not None else default_run_dir(meta, run_key, config)
        if attempt is None and run_dir is not None:
            attempt = _read_started_at(run_dir)
        tags = [t for t in (meta.get("table"), meta.get("row") or meta.get("name"), meta["dataset"],
                            meta.get("protocol"), meta.get("profile")) if t]
        if meta.get("fold") is not None:
            tags.append(f"fold{meta['fold']}")
        self.id = wandb_id(run_dir, attempt, run_key)
        self.init_kwargs = dict(
            project=cfg.project,
            entity=cfg.entity,
            group=run_group(meta),
            job_type=(meta.get("protocol") or "full") + (f"-{meta['phase']}" if meta.get("phase") else ""),
            name=run_name(meta),
            id=self.id,
            resume="allow",
            tags=[*tags, *cfg.tags],
            config=run_config(meta, run_key, config, run_dir),
            dir=cfg.dir,
            reinit="finish_previous",
        )
        mode = os.environ.get("WANDB_MODE") or cfg.mode
        try:
            os.makedirs(cfg.dir, exist_ok=True)
            if mode == "online":
                base = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
                why = _server_unreachable(base)
                if why is not None:
                    self._offline_instead(wandb, f"{base} is unreachable ({why})")
                    return
            try:
                self._init(wandb, mode)
            except Exception as e:
                if mode != "online":
                    raise
                wandb.teardown()  # the failed online run still holds its id in the wandb service
                self._offline_instead(wandb, f"online init failed ({type(e).__name__}: {_first_line(e)})")
        except Exception as e:
            self._warn("init", e)

    def _init(self, wandb, mode: str) -> None:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT_S)
        self.run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout), **self.init_kwargs)
        self.mode = mode

    def _offline_instead(self, wandb, reason: str) -> None:
        msg = (f"wandb: {reason}; logging run {self.id} offline under {self.init_kwargs['dir']}/wandb "
               f"(upload later with `make wandb-sync`)")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        self._init(wandb, "offline")

    def _warn(self, what: str, e: Exception) -> None:
        msg = f"wandb {what} failed ({type(e).__name__}: {_first_line(e)}); training continues without wandb"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        log.warning(msg)
        self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            try:
                # commit now, so a later summary update (the final metrics) is never overwritten by this row
                self.run.log(metrics, step=step, commit=True)
            except Exception as e:
                self._warn("log", e)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(values)
            except Exception as e:
                self._warn("summary", e)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:
                self._warn("finish", e)
            self.run = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def make_logger(
    logger_cfg,
    meta: dict[str, Any],
    key: str,
    config: dict[str, Any],
    *,
    run_dir: str | os.PathLike | None = None,
    attempt: str | None = None,
) -> NullLogger:
    """The logger ``logger_cfg.name`` asks for.

    ``run_dir`` and ``attempt`` (a string that names this attempt and survives its resumes, e.g. the record's
    ``started_at``) make the wandb id.  Without them they are read from the config's output settings and the
    ``run.json`` already written there.
    """
    if logger_cfg.name == "none":
        return NullLogger()
    if logger_cfg.name == "wandb":
        return WandbLogger(logger_cfg, meta, key, config, run_dir=run_dir, attempt=attempt)
    raise ValueError(f"unknown logger {logger_cfg.name!r}; use none or wandb")


# ------------------------------------------------------------------------------------- reading offline runs

_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
_RECORD = struct.Struct("<IHB")  # crc32 (seeded with the type byte), length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class OfflineRunError(ValueError):
    pass


def _wandb_records(path: Path) -> Iterator[bytes]:
    """Protobuf payloads of a ``run-<id>.wandb`` file (wandb's leveldb-style log: 32 KiB blocks of chunks)."""
    data = path.read_bytes()
    if len(data) < _HEADER.size or _HEADER.unpack_from(data)[:2] != (b":W&B", 0xBEE1):
        raise OfflineRunError(f"{path} is not a wandb run file")
    pos, parts = _HEADER.size, []
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # block trailer padding
            pos += left
            continue
        crc, n, kind = _RECORD.unpack_from(data, pos)
        if (crc, n, kind) == (0, 0, 0):
            pos += left
            continue
        chunk = data[pos + _RECORD.size : pos + _RECORD.size + n]
        if len(chunk) < n:
            break  # a run still being written: stop at its last complete chunk
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise OfflineRunError(f"{path}: checksum mismatch at byte {pos}")
        pos += _RECORD.size + n
        parts.append(chunk)
        if kind in (_FULL, _LAST):
            yield b"".join(parts)
            parts = []


def _set(tree: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = json.loads(item.value_json)


def read_offline_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What an offline run folder (``.../wandb/offline-run-*``) holds, read without any network.

    Returns ``id``, ``project``, ``name``, ``group``, ``job_type``, ``tags``, ``config`` (as logged),
    ``summary`` (all summary updates applied in order), ``history`` (one dict per logged step) and
    ``exit_code`` (None while the run has not finished).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise OfflineRunError(f"no run-*.wandb file in {run_dir}")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "exit_code": None}
    for payload in _wandb_records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.update(id=r.run_id, project=r.project, name=r.display_name, group=r.run_group,
                       job_type=r.job_type, tags=list(r.tags))
            for item in r.config.update:
                _set(out["config"], item)
        elif kind == "config":
            for item in rec.config.update:
                _set(out["config"], item)
        elif kind == "summary":
            for item in rec.summary.update:
                _set(out["summary"], item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _set(row, item)
            out["history"].append(row)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    out["config"].pop("_wandb", None)
    return out


def offline_runs(wandb_dir: str | os.PathLike) -> list[Path]:
    """Every offline run folder under ``wandb_dir`` (the logger's ``dir``; runs sit in its ``wandb/``)."""
    root = Path(wandb_dir)
    return sorted({*root.glob("wandb/offline-run-*"), *root.glob("offline-run-*")})
