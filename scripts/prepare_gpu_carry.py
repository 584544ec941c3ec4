#!/usr/bin/env python
"""Prepare the folder a lent GPU machine needs for ``scripts/gpu_check.py``, and print the exact device call.

    python scripts/prepare_gpu_carry.py --data-root DIR        # DIR holds cifar-10-batches-py/ (make gpu-carry)
    python scripts/prepare_gpu_carry.py --no-data --no-wheels  # only the size check and the call

It writes (into ``--out``, default ``gpu_carry/``, git-ignored):

* ``wheels/``: Hydra, OmegaConf, the ANTLR runtime they parse with, PyYAML and packaging, as wheels for the device's
  Python 3.12 on x86-64 (``pip download --only-binary``; ANTLR 4.9.3 exists only as a source archive, so it is
  built into a pure-Python wheel with ``pip wheel``).  The device image has PyTorch, numpy, pandas, tqdm but
  no Hydra; ``gpu_check.py`` installs these with ``pip --no-index`` when it finds Hydra missing.
* ``cifar10.tar.xz``: the CIFAR-10 folder re-packed byte for byte (xz), 44 MiB for the 10,000 + 10,000 image
  real subset, so it travels with the call (the folder beside the checkout does not);
* ``MANIFEST.json``: sha256 of every data file (checked after unpacking on the device), the wheels, the commit.

Then it adds up what a ``run`` call would send (tracked and untracked-not-ignored files plus this folder; at
most 64 MiB) and prints the call: command, carry list and timeout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20  # what one device call may send
CMD_LIMIT = 2000  # characters of one device command
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# package -> version used when this Python does not have it installed (the suite's pyproject ranges)
FALLBACK = {"hydra-core": "1.3.2", "omegaconf": "2.3.0", "PyYAML": "6.0.2", "packaging": "24.2"}
ANTLR = "antlr4-python3-runtime==4.9.3"  # hydra-core and omegaconf pin 4.9.*


def _kit():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return FALLBACK[dist]


def download_commands(dest: Path, python_version: str = "3.12") -> list[list[str]]:
    """The pip commands that fetch the wheels for the device (binary wheels; ANTLR built from its sdist)."""
    pins = [f"{d}=={local_version(d)}" for d in ("hydra-core", "omegaconf", "PyYAML", "packaging")]
    plat = [x for p in PLATFORMS for x in ("--platform", p)]
    return [
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
         python_version, "--implementation", "cp", *plat, "-d", str(dest), *pins],
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), ANTLR],
    ]


def fetch_wheels(dest: Path) -> list[dict]:
    if dest.exists():
        shutil.rmtree(dest)  # one version of each package: two would stop the install
    dest.mkdir(parents=True)
    for cmd in download_commands(dest):
        print("  $", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    antlr = [w for w in wheels if w.name.startswith("antlr4_python3_runtime")]
    if len(wheels) != 5 or len(antlr) != 1 or not antlr[0].name.endswith("py3-none-any.whl"):
        raise SystemExit(f"expected 5 wheels (a pure-Python ANTLR among them), got {[w.name for w in wheels]}")
    return [{"file": w.name, "bytes": w.stat().st_size, "sha256": sha256(w)} for w in wheels]


def count_images(folder: Path) -> tuple[int, int]:
    def n(name: str) -> int:
        with open(folder / name, "rb") as f:
            return len(pickle.load(f, encoding="latin1")["labels"])

    return sum(n(f"data_batch_{i}") for i in range(1, 6)), n("test_batch")


def pack_cifar(data_root: Path, out: Path, archive_name: str) -> dict:
    """``data_root/cifar-10-batches-py`` -> ``out/<archive_name>`` (tar, xz); a manifest entry with sha256s."""
    folder = data_root / "cifar-10-batches-py"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not (folder / "data_batch_1").exists() or not (folder / "test_batch").exists():
        raise SystemExit(f"{folder}: not a CIFAR-10 folder in the official python layout")
    want = {f"cifar-10-batches-py/{p.name}": {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files}
    archive = out / archive_name
    old = out / "MANIFEST.json"
    if archive.exists() and old.exists():  # unchanged source: keep the archive (xz takes a minute)
        prev = json.loads(old.read_text()).get("data") or {}
        if prev.get("files") == want and prev.get("archive_sha256") == sha256(archive):
            print(f"  {archive} is up to date", flush=True)
            return prev
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=6) as tar:
        for p in files:
            info = tar.gettarinfo(str(p), arcname=f"cifar-10-batches-py/{p.name}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(p, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(archive)
    n_train, n_test = count_images(folder)
    return {"archive": archive_name, "archive_bytes": archive.stat().st_size, "archive_sha256": sha256(archive),
            "files": want, "train_images": n_train, "test_images": n_test,
            "origin": f"{folder.name} from a folder named {data_root.name!r}"}


def travel_bytes(carry: Path) -> dict:
    """Bytes a device call sends: tracked + untracked-not-ignored files of the checkout, plus the carry folder."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    tree = sum((REPO / f).stat().st_size for f in out.decode().split("\0") if f and (REPO / f).is_file())
    extra = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file()) if carry.exists() else 0
    return {"tree": tree, "carry": extra, "total": tree + extra, "limit": LIMIT_BYTES}


def git_state() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def run_call(carry_rel: str, budget_s: float, timeout_s: int) -> dict:
    command = (f"set -o pipefail; mkdir -p $OUT && PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out $OUT "
               f"--carry {carry_rel} --budget-s {budget_s:.0f} 2>&1 | tee $OUT/gpu_check.log")
    if len(command) > CMD_LIMIT:
        raise SystemExit(f"device command of {len(command)} characters (limit {CMD_LIMIT})")
    return {"command": command, "carry": [carry_rel], "timeout_s": timeout_s}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "gpu_carry"), help="carry folder (inside the checkout, git-ignored)")
    p.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/ (default $CRELU_DATA_ROOT)")
    p.add_argument("--no-data", action="store_true", help="no CIFAR archive (the kit then trains on generated data)")
    p.add_argument("--no-wheels", action="store_true", help="no wheels (for a device that has Hydra)")
    p.add_argument("--budget-s", type=float, default=420.0, help="gpu_check --budget-s in the printed call")
    p.add_argument("--timeout-s", type=int, default=510, help="the run call's timeout_s (at most 600)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    kit = _kit()
    manifest: dict = {"created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "git": git_state(), "python_target": "3.12 x86_64"}
    if not args.no_wheels:
        print("wheels for the device (Python 3.12, x86-64):", flush=True)
        manifest["wheels"] = fetch_wheels(out / "wheels")
    elif (out / "wheels").exists():
        shutil.rmtree(out / "wheels")
    if not args.no_data:
        root = args.data_root or os.environ.get("CRELU_DATA_ROOT")
        if not root:
            raise SystemExit("give --data-root DIR (the folder holding cifar-10-batches-py/) or set CRELU_DATA_ROOT; "
                             "or --no-data to let the kit train on generated images")
        print(f"re-packing {Path(root) / 'cifar-10-batches-py'} ...", flush=True)
        manifest["data"] = pack_cifar(Path(root), out, kit.DATA_ARCHIVE)
    elif (out / kit.DATA_ARCHIVE).exists():
        (out / kit.DATA_ARCHIVE).unlink()
    (out / kit.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    try:
        rel = out.relative_to(REPO).as_posix()
    except ValueError:
        rel = None
    call = run_call(rel or out.name, args.budget_s, args.timeout_s)
    (out / "RUN_CALL.json").write_text(json.dumps(call, indent=1) + "\n")
    size = travel_bytes(out)
    result = {"carry": str(out), "manifest": manifest, "travel": size, "run": call, "inside_checkout": rel is not None}
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    print(f"\ncarry folder {out}: {mib(size['carry'])}; the checkout sends {mib(size['tree'])}; together "
          f"{mib(size['total'])} of the {mib(LIMIT_BYTES)} a call may send")
    if rel is None:
        print("WARNING: the carry folder is outside the checkout, so a device call cannot send it; use --out "
              "gpu_carry")
    if size["total"] > LIMIT_BYTES:
        print("WARNING: over the limit: drop the data (--no-data) or shrink the checkout's untracked files")
    print("\nWith a GPU lent, make this device `run` call (also in RUN_CALL.json there):")
    print(f"  command:   {call['command']}")
    print(f"  carry:     {json.dumps(call['carry'])}")
    print(f"  timeout_s: {call['timeout_s']}")
    print("Then copy the returned files (gpu_check.json, gpu_check.md, gpu_check.log, trace_*.json.gz) into "
          "results/gpu/<date>-<device>/ (the JSON's suggested_dir) and commit them.")
    return result


if __name__ == "__main__":
    main()
