#!/usr/bin/env python
"""GPU evidence kit: one command that turns a lent GPU into committed measurements (``make gpu-check``).

    python scripts/gpu_check.py --out DIR [--budget-s 420] [--carry gpu_carry]      # on a CUDA machine
    GPU_CHECK_DRY=1 python scripts/gpu_check.py --out DIR                           # same script, CPU, tiny

Within ``--budget-s`` seconds (it stops starting new work before the budget is spent) it writes
``gpu_check.json`` and ``gpu_check.md`` (device name, versions, commit, date; both rewritten after every
section, so a run cut short still leaves what it measured) and a compressed profiler trace into ``--out``:

1. ``bench``: at full width, ConvPool-CNN-C baseline and CReLU and VGG: images/s, TFLOP/s and MFU of the suite's
   training step against the dense bf16 matmul rate measured at the start of the same run; the suite against a
   plain DataLoader + fp32 loop; K=10 packed folds against one model; ``train.compile`` on and off.  It calls
   the functions of ``benchmarks/bench_cifar.py`` (what ``make bench`` runs).
2. ``profile``: ``torch.profiler`` over the suite's training step (``crelu.training.engine.train_epoch``,
   device-resident batches, bf16, channels_last): top kernels, host vs device time per step, kernels and
   host-device synchronisations per step.  Counting over two epochs of different lengths separates what each
   step costs from what each epoch costs once.
3. ``train``: with the time left, real-data training at full width on the CIFAR-10 subset the carry folder
   holds (``scripts/prepare_gpu_carry.py``): Table 1's lr grid {0.25, 0.1, 0.05, 0.01} for the baseline and
   CReLU rows, 10-fold k-fold jobs packed (``protocol.pack``) as far as the time allows, as many epochs as fit
   (the 350-epoch schedule's milestones scaled to them); final validation and test errors per fold.
4. ``estimate``: ``scripts/plan_sweep.py`` (``make table1 DRY_RUN=1``) for Tables 1 and 2 fed the TFLOP/s
   measured in (1): GPU-hours with one model per job, and with K folds packed per job.

Dry mode (``GPU_CHECK_DRY=1`` or ``--dry``) runs every section on the CPU at tiny sizes (width 1/16, a few
steps, generated CIFAR when no real copy is given) so tests keep the kit working; its numbers say nothing about
a GPU.  Without ``--out`` the results go to ``results/gpu/<date>-<device>/`` (dry: ``results/gpu_dry/``).

Device machines may lack Hydra/OmegaConf: when they are missing, the wheels in ``<carry>/wheels`` are installed
into a temporary folder with ``pip --no-index`` and put on the path (also for the plan_sweep subprocesses).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
DATA_ARCHIVE = "cifar10.tar.xz"  # written by scripts/prepare_gpu_carry.py
MANIFEST = "MANIFEST.json"
KIT_MODELS = [("convpool_c", "baseline"), ("convpool_c", "crelu"), ("vgg", "baseline")]
TRAIN_ROWS = ["baseline", "crelu"]  # Table 1 rows trained on real data
LR_GRID = [0.01, 0.05, 0.1, 0.25]  # Table 1's lr grid (optim.lr_grid), in the order it is trained
TARGETS = {"convpool_mfu": 0.35, "suite_vs_plain": 3.0, "packed10_time_ratio": 3.0}  # issue 15's targets
WHEEL_OF = {"packaging": "packaging", "yaml": "pyyaml", "antlr4": "antlr4_python3_runtime", "omegaconf": "omegaconf",
            "hydra": "hydra_core"}  # module -> wheel file prefix (scripts/prepare_gpu_carry.py downloads them)
SYNC_APIS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
SETTINGS = {
    "gpu": dict(width_scale=1.0, batch=128, warmup=20, steps=100, repeats=3, ref_steps=50, ref_repeats=2,
                pack=10, pack_warmup=5, pack_steps=30, pack_repeats=2, prof_steps=(10, 30),
                compile_backend="inductor", compile_guess_s=90.0, prof_models=3, compile_models=3,
                estimate_jobs=None, estimate_tables=("table1", "table2"),
                estimate_variants=("single", "folds", "folds_packed"), train_folds=10,
                train_min_epochs=10, train_max_epochs=350, train_subset=None, test_subset=None, train_batch=128,
                eval_batch=1000, reserve_s=20.0, threads=None, gen_train=10000, gen_test=2000),
    "dry": dict(width_scale=0.0625, batch=8, warmup=1, steps=2, repeats=1, ref_steps=2, ref_repeats=1,
                pack=3, pack_warmup=1, pack_steps=2, pack_repeats=1, prof_steps=(2, 6),
                compile_backend="eager", compile_guess_s=15.0, prof_models=1, compile_models=1,
                estimate_jobs="single,fold0", estimate_tables=("table1",),
                estimate_variants=("folds_packed",), train_folds=2,
                train_min_epochs=1, train_max_epochs=1, train_subset=160, test_subset=100, train_batch=16,
                eval_batch=100, reserve_s=5.0, threads=1, gen_train=300, gen_test=100),
}
log = logging.getLogger("gpu_check")


# ----------------------------------------------------------------------------------------------- environment
def bootstrap(carry: Path, modules: dict[str, str] | None = None, site: Path | None = None) -> dict:
    """Make ``crelu`` (src/), Hydra and OmegaConf importable; install carried wheels for the modules missing.

    ``modules`` maps module name -> wheel file prefix (default :data:`WHEEL_OF`); the wheels go into ``site``
    (default ``<tmp>/gpu_check_site``) with ``pip --no-index`` and that folder goes first on ``sys.path``.
    """
    modules = WHEEL_OF if modules is None else modules
    info: dict = {"python": platform.python_version(), "executable": sys.executable, "added_paths": []}
    if importlib.util.find_spec("crelu") is None:
        sys.path.insert(0, str(REPO / "src"))
        info["added_paths"].append(str(REPO / "src"))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    info["missing_modules"] = missing
    if missing:  # install only what is missing: the machine's own packages stay in charge
        have = sorted((carry / "wheels").glob("*.whl")) if (carry / "wheels").is_dir() else []
        wheels = [w for w in have if w.name.lower().startswith(tuple(f"{modules[m]}-" for m in missing))]
        lacking = [m for m in missing if not any(w.name.lower().startswith(f"{modules[m]}-") for w in wheels)]
        if lacking:
            raise SystemExit(f"gpu_check: {lacking} not importable and no wheel for it in {carry / 'wheels'}; "
                             "run scripts/prepare_gpu_carry.py (make gpu-carry) and carry that folder")
        site = site or Path(tempfile.gettempdir()) / "gpu_check_site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
        sys.path.insert(0, str(site))
        info["added_paths"].insert(0, str(site))
        importlib.invalidate_caches()
        info["installed_wheels"] = [w.name for w in wheels]
    return info


def subprocess_env(boot: dict, hydra_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*boot["added_paths"], *filter(None, [env.get("PYTHONPATH")])])
    env["CRELU_HYDRA_DIR"] = str(hydra_dir)
    return env


def versions() -> dict:
    import numpy
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "numpy": numpy.__version__, "platform": platform.platform()}
    for mod in ("torchvision", "hydra", "omegaconf", "triton"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            out[mod] = None
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        out["visible_devices"] = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                      "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
    if shutil.which("nvidia-smi"):  # a read-only query: driver, clocks, power limit, temperature as found
        fields = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu"
        try:
            q = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            out["nvidia_smi"] = {"fields": fields, "values": q.stdout.strip()}
        except (OSError, subprocess.SubprocessError) as e:
            out["nvidia_smi"] = {"error": str(e)}
    return out


def commit_info(carry: Path) -> dict:
    from crelu.training.environment import git_info

    info = git_info(REPO)
    if info.get("commit") is None and (carry / MANIFEST).exists():  # the device copy has no .git
        info = {**json.loads((carry / MANIFEST).read_text()).get("git", {}), "from": "carry manifest"}
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0 = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def before(self, fraction: float, need: float = 0.0) -> bool:
        """True when ``need`` more seconds still end before ``fraction`` of the budget."""
        return self.elapsed() + need <= fraction * self.seconds


# ----------------------------------------------------------------------------------------------------- data
def unpack_cifar_archive(carry: Path, dest: Path) -> dict:
    """Unpack ``<carry>/cifar10.tar.xz`` into ``dest`` and check every file against the manifest's sha256."""
    manifest = json.loads((carry / MANIFEST).read_text())
    want = manifest["data"]["files"]
    with tarfile.open(carry / DATA_ARCHIVE, "r:xz") as tar:
        names = tar.getnames()
        bad = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValueError(f"{DATA_ARCHIVE}: unsafe member names {bad}")
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **kw)
    for rel, meta in want.items():
        digest = hashlib.sha256((dest / rel).read_bytes()).hexdigest()
        if digest != meta["sha256"]:
            raise ValueError(f"{rel}: sha256 {digest} differs from the carry manifest's {meta['sha256']}")
    return {"source": "carried", "root": str(dest), "files": len(want), "sha256_checked": True,
            "origin": manifest["data"].get("origin"), "train_images": manifest["data"].get("train_images"),
            "test_images": manifest["data"].get("test_images")}


def find_data(args, st: dict, carry: Path, work: Path) -> dict:
    """Real CIFAR-10 if there is one (``--data-root``, ``$CRELU_DATA_ROOT``, the carry folder), else generated."""
    for root, how in [(args.data_root, "--data-root"), (os.environ.get("CRELU_DATA_ROOT"), "CRELU_DATA_ROOT")]:
        if root and (Path(root) / "cifar-10-batches-py" / "data_batch_1").exists():
            return {"source": "given", "via": how, "root": str(Path(root).resolve())}
    if (carry / DATA_ARCHIVE).exists():
        return unpack_cifar_archive(carry, work / "cifar")
    from crelu.data import write_fake_cifar

    root = write_fake_cifar(work / "generated", "cifar10", n_train=st["gen_train"], n_test=st["gen_test"], seed=0)
    return {"source": "generated", "root": str(root), "train_images": st["gen_train"], "test_images": st["gen_test"],
            "note": "no real CIFAR-10 given or carried: generated images (numbers say nothing about CIFAR)"}


# --------------------------------------------------------------------------------------------- measurements
def load_bench():
    spec = importlib.util.spec_from_file_location("bench_cifar", REPO / "benchmarks" / "bench_cifar.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Kit:
    def __init__(self, args, st: dict, out: Path, work: Path, carry: Path, boot: dict) -> None:
        import torch

        from crelu.training import environment as env

        self.args, self.st, self.out, self.work, self.carry, self.boot = args, st, out, work, carry, boot
        self.torch, self.env = torch, env
        self.budget = Budget(args.budget_s)
        self.device = torch.device("cpu") if args.dry else env.select_device(args.device)
        if self.device.type != "cuda" and not args.dry:
            raise SystemExit("gpu_check: no CUDA device; run the dry mode (GPU_CHECK_DRY=1) on a CPU machine")
        if st["threads"]:
            torch.set_num_threads(st["threads"])
        env.seed_everything(0, deterministic=False)  # cudnn.benchmark on, as in training
        self.bc = load_bench()
        self.device_name = env.describe_device(self.device)["device_name"]
        if self.device.type == "cpu":
            self.device_name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
        now = _dt.datetime.now(_dt.timezone.utc)
        self.report: dict = {
            "kit": "scripts/gpu_check.py", "dry": bool(args.dry), "mode": "dry (CPU, tiny sizes)" if args.dry
            else "gpu", "created_at": now.isoformat(timespec="seconds"), "device_name": self.device_name,
            "device_type": self.device.type, "suggested_dir": f"results/gpu/{now:%Y-%m-%d}-{slug(self.device_name)}",
            "versions": versions(), "git": commit_info(carry), "bootstrap": boot, "budget_s": args.budget_s,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in st.items()}, "targets": TARGETS,
            "sections": {}, "timings": {}, "errors": {},
        }
        self.rates: dict = {}  # (family, row) -> bench numbers used by later sections
        self.plans = PlanRunner()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ reporting
    def save(self) -> None:
        with self._lock:
            self.report["elapsed_s"] = round(self.budget.elapsed(), 1)
            atomic_write(self.out / "gpu_check.json", json.dumps(self.report, indent=1, default=str) + "\n")
            atomic_write(self.out / "gpu_check.md", render_markdown(self.report))

    def section(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        print(f"[gpu_check {self.budget.elapsed():6.1f}s] {name} ...", flush=True)
        try:
            self.report["sections"][name] = fn()
        except Exception as e:  # noqa: BLE001 - a failed section is recorded; the others still run
            self.report["errors"][name] = f"{type(e).__name__}: {e}"
            self.report["sections"].setdefault(name, {"error": f"{type(e).__name__}: {e}"})
            traceback.print_exc()
        self.report["timings"][name] = round(time.perf_counter() - t0, 2)
        self.save()

    def bench_args(self, **over) -> SimpleNamespace:
        st = self.st
        a = dict(batch=st["batch"], steps=st["steps"], warmup=st["warmup"], repeats=st["repeats"],
                 width_scale=st["width_scale"], pack=st["pack"], amp="auto", channels_last="auto", compile=False,
                 compile_backend=st["compile_backend"], ref_workers=(min(8, os.cpu_count() or 1)
                                                                     if self.device.type == "cuda" else 0))
        a.update(over)
        return SimpleNamespace(**a)

    def compose(self, overrides: list[str]):
        from crelu.config import compose_config

        return compose_config(overrides)

    def model_cfg(self, family: str, row: str):
        return self.compose([f"experiment={self.bc.MODELS[family, row]}",
                             f"model.width_scale={self.st['width_scale']}"])

    # ---------------------------------------------------------------------------------------------- peak
    def peak(self) -> dict:
        m = self.bc.measure_matmul_tflops(self.device)
        copy = measure_copy_gbps(self.torch, self.device)
        self.report["peak_tflops"] = m["tflops"]
        return {"matmul": m, "copy": copy, "datasheet_bf16_tflops": self.bc.peak_tflops(self.device_name),
                "note": "MFU = achieved TFLOP/s / this measured matmul rate (bf16 on CUDA; fp32 on CPU)"}

    def per_model(self, section: str, models: list, guard, fn) -> list[dict]:
        """``fn(i, family, row) -> dict`` for each model while ``guard()`` allows; a failing model is recorded."""
        rows = []
        for i, (family, row) in enumerate(models):
            if not guard():
                rows.append({"family": family, "row": row, "skipped": "time budget"})
                continue
            try:
                rows.append({"family": family, "row": row, **fn(i, family, row)})
            except Exception as e:  # noqa: BLE001 - the other models still run
                traceback.print_exc()
                msg = f"{type(e).__name__}: {str(e)[:300]}"
                rows.append({"family": family, "row": row, "error": msg})
                self.report["errors"][f"{section}:{family}:{row}"] = msg
                if self.device.type == "cuda":
                    self.torch.cuda.empty_cache()
        return rows

    # --------------------------------------------------------------------------------------------- bench
    def bench(self) -> dict:
        st = self.st
        rows = self.per_model("bench", KIT_MODELS, lambda: self.budget.before(0.45), self._bench_one)
        return {"rows": rows, "batch": st["batch"], "width_scale": st["width_scale"],
                "note": "suite = crelu.training.engine.train_epoch on device-resident batches (bf16 autocast and "
                        "channels_last on CUDA); plain = DataLoader + per-sample PIL transforms, fp32, "
                        "loss.item() every step; packedK = K models as one PackedNet, each on its own batches"}

    def _bench_one(self, i: int, family: str, row: str) -> dict:
        """Suite, plain loop and K-pack rates of one model; the plain loop and the pack may fail on their own."""
        from crelu.models import build_model
        from crelu.models.flops import train_step_flops

        st, bc, peak, torch = self.st, self.bc, self.report.get("peak_tflops"), self.torch
        sheet = bc.peak_tflops(self.device_name)
        cuda = self.device.type == "cuda"
        cfg = self.model_cfg(family, row)
        fpi = train_step_flops(build_model(cfg.model, cfg.dataset.num_classes), 32, batch=2) / 2
        s = bc._Setup(self.bench_args(), self.device, cfg)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        suite = bc.bench_suite(s)
        t_suite = time.perf_counter() - t0
        k, notes = st["pack"], {}
        r = {"family": family, "row": row, "flops_per_image": fpi, "suite_wall_s": round(t_suite, 2),
             "suite_peak_mem_gib": torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None,
             **rate("suite", suite, fpi, peak, sheet), "k": k,
             "amp": str(s.amp).replace("torch.", "") if s.amp else "fp32", "channels_last": s.channels_last}
        ref_args = dict(steps=st["ref_steps"], repeats=st["ref_repeats"])
        try:
            ref = bc.bench_reference(bc._Setup(self.bench_args(**ref_args), self.device, cfg))
        except Exception as e:  # noqa: BLE001 - e.g. DataLoader workers without enough shared memory
            notes["plain"] = f"with workers: {type(e).__name__}: {str(e)[:200]}; measured with 0 workers"
            ref = bc.bench_reference(bc._Setup(self.bench_args(ref_workers=0, **ref_args), self.device, cfg))
        r.update(rate("plain", ref, fpi, peak, sheet), suite_vs_plain=suite / ref)
        try:
            packed = bc.bench_packed(bc._Setup(self.bench_args(steps=st["pack_steps"], warmup=st["pack_warmup"],
                                                               repeats=st["pack_repeats"]), self.device, cfg), k)
            # time of K folds packed / time of one model (same images per model): K * suite / packed
            r.update(rate(f"packed{k}", packed, fpi, peak, sheet), packed_time_ratio=k * suite / packed)
        except Exception as e:  # noqa: BLE001 - the suite and plain numbers stand without it
            traceback.print_exc()
            notes[f"packed{k}"] = f"{type(e).__name__}: {str(e)[:300]}"
            self.report["errors"][f"bench:{family}:{row}:packed{k}"] = notes[f"packed{k}"]
            packed = math.nan
            if cuda:
                torch.cuda.empty_cache()
        if notes:
            r["notes"] = notes
        self.rates[family, row] = r
        print(f"  {family}:{row} suite {suite:,.0f} img/s ({r['suite_tflops']:.2f} TFLOP/s, MFU "
              f"{fmt_pct(r['suite_mfu'])}), plain {ref:,.0f}, {k} packed {packed:,.0f} img/s", flush=True)
        self.report["sections"]["bench"] = {"rows": [v for v in self.rates.values()]}
        self.save()
        return r

    def compile_bench(self) -> dict:
        st = self.st
        guess = {"s": st["compile_guess_s"]}

        def one(i: int, family: str, row: str) -> dict:
            if (family, row) not in self.rates:
                return {"skipped": "no eager measurement"}
            peak, sheet = self.report.get("peak_tflops"), self.bc.peak_tflops(self.device_name)
            self.torch._dynamo.reset()
            s = self.bc._Setup(self.bench_args(compile=True), self.device, self.model_cfg(family, row))
            t0 = time.perf_counter()
            ips = self.bc.bench_suite(s)
            wall = time.perf_counter() - t0
            guess["s"] = max(guess["s"], wall)
            eager = self.rates[family, row]
            r = {"backend": st["compile_backend"], "wall_s_incl_compile": round(wall, 2),
                 **rate("compiled", ips, eager["flops_per_image"], peak, sheet),
                 "eager_images_per_s": eager["suite_images_per_s"], "speedup": ips / eager["suite_images_per_s"]}
            print(f"  compiled {family}:{row} {ips:,.0f} img/s ({r['speedup']:.2f}x eager), {wall:.0f}s with "
                  "compilation", flush=True)
            return r

        rows = self.per_model("compile", KIT_MODELS[: st["compile_models"]],
                              lambda: self.budget.before(0.55, guess["s"]), one)
        return {"rows": rows, "note": "train.compile=true: torch.compile of the suite model (backend named)"}

    # ------------------------------------------------------------------------------------------- profile
    def profile(self) -> dict:
        st = self.st
        s1, s2 = st["prof_steps"]
        rows = self.per_model("profile", KIT_MODELS[: st["prof_models"]], lambda: self.budget.before(0.5),
                              self._profile_one)
        note = ("per-step numbers are the slope between a {}-step and a {}-step epoch (the intercept is what an "
                "epoch costs once: its final loss/error read-back); syncs = {} calls; on CPU no device events "
                "exist and item() calls (aten::_local_scalar_dense) stand for syncs").format(s1, s2,
                                                                                           ", ".join(SYNC_APIS))
        return {"steps": [s1, s2], "models": rows, "note": note}

    def _profile_one(self, i: int, family: str, row: str) -> dict:
        from torch.profiler import ProfilerActivity, profile

        from crelu.training.optim import build_optimizer

        torch, st, bc = self.torch, self.st, self.bc
        s1, s2 = st["prof_steps"]
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        s = bc._Setup(self.bench_args(steps=s2), self.device, self.model_cfg(family, row))
        model = s.model(0)
        opt = build_optimizer(s.cfg.optim, model.parameters())
        data, gen = s.batches(0), torch.Generator().manual_seed(0)
        kw = dict(gen=gen, device=self.device, amp_dtype=s.amp, quiet=True)
        bc.suite_epoch(model, opt, data, max_steps=max(st["warmup"], 2), **kw)  # warm-up (cudnn.benchmark)
        summaries = {}
        for steps in (s1, s2):
            with profile(activities=acts) as prof:
                t0 = time.perf_counter()
                bc.suite_epoch(model, opt, data, max_steps=steps, **kw)
                wall = time.perf_counter() - t0
            summaries[steps] = summarise_events(prof.events(), wall)
            if i == 0 and steps == s1:
                self.report["trace"] = save_trace(prof, self.out / f"trace_{family}-{row}.json.gz")
        m = per_step(summaries, s1, s2)
        eager = self.rates.get((family, row))
        if eager:  # unprofiled wall time per step, from the bench
            m["wall_ms_per_step_unprofiled"] = 1e3 * st["batch"] / eager["suite_images_per_s"]
            m["device_busy_fraction"] = m["device_busy_ms_per_step"] / m["wall_ms_per_step_unprofiled"]
        print(f"  profiled {family}:{row}: {m['syncs_per_step']:.2f} syncs/step, "
              f"{m['kernels_per_step']:.0f} kernels/step", flush=True)
        return {**m, "top": summaries[s2]["top"]}

    # --------------------------------------------------------------------------------------------- train
    def train(self) -> dict:
        from crelu.data import load_cifar
        from crelu.protocols.runner import run as run_job

        st, torch = self.st, self.torch
        data = self.data()
        t0 = time.perf_counter()
        x_tr, _ = load_cifar("cifar10", data["root"], train=True, download=False, allow_modified=True)
        x_te, _ = load_cifar("cifar10", data["root"], train=False, download=False, allow_modified=True)
        load_s = time.perf_counter() - t0
        n_train = min(len(x_tr), st["train_subset"] or len(x_tr))
        n_test = min(len(x_te), st["test_subset"] or len(x_te))
        folds = st["train_folds"]
        plan = self.plan_training(n_train, n_test, folds, load_s)
        out = {"data": data, "train_images": n_train, "test_images": n_test, "folds": folds, "plan": plan,
               "configs": []}
        self.report["sections"]["train"] = out
        if plan["epochs"] < 1:
            out["skipped"] = "time budget"
            return out
        e, p = plan["epochs"], plan["pack"]
        corr = 1.0
        for lr in LR_GRID:
            for row in TRAIN_ROWS:
                pred = plan["predicted_s"][row]
                c = {"row": row, "lr": lr, "pack": p, "epochs": e}
                if self.budget.left() - st["reserve_s"] < pred * corr:
                    c["status"] = "skipped: time budget"
                    out["configs"].append(c)
                    continue
                root = self.work / "runs" / f"{row}-lr{lr}"
                over = [f"experiment=table1/{row}", "dataset=cifar10", f"dataset.root={data['root']}",
                        "dataset.download=false", "protocol=kfold", "protocol.fold=0", f"protocol.folds={folds}",
                        f"protocol.pack={p}", f"optim.lr={lr}", f"schedule.epochs={e}",
                        f"schedule.milestones=[{','.join(map(str, plan['milestones']))}]",
                        f"model.width_scale={st['width_scale']}", f"train.batch_size={st['train_batch']}",
                        f"train.eval_batch_size={st['eval_batch']}", "train.quiet=true", "train.checkpoint=false",
                        "train.save_logits=false", f"train.device={self.device.type}", f"output.root={root}"]
                if st["train_subset"]:
                    over.append(f"dataset.train_subset={st['train_subset']}")
                if st["test_subset"]:
                    over.append(f"dataset.test_subset={st['test_subset']}")
                c["overrides"] = over
                t1 = time.perf_counter()
                try:
                    run_job(self.compose(over))
                    c["status"] = "finished"
                except FloatingPointError as err:  # DivergedError: the record of each fold says which
                    c["status"] = f"diverged: {str(err)[:200]}"
                except Exception as err:  # noqa: BLE001 - one config failing must not stop the grid
                    c["status"] = f"error: {type(err).__name__}: {str(err)[:300]}"
                    traceback.print_exc()
                c["wall_s"] = round(time.perf_counter() - t1, 2)
                corr = max(corr, c["wall_s"] / pred) if pred > 0 else corr
                c.update(read_records(root))
                out["configs"].append(c)
                print(f"  {row} lr={lr}: {c['status'][:40]}, {c.get('folds_finished', 0)}/{p} folds, val "
                      f"{fmt_num(c.get('val_error_mean'))}% test {fmt_num(c.get('test_error_mean'))}% "
                      f"in {c['wall_s']:.0f}s", flush=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.save()
        out["best_lr"] = best_lr(out["configs"])
        out["correction"] = round(corr, 3)
        return out

    def plan_training(self, n_train: int, n_test: int, folds: int, load_s: float) -> dict:
        """Pick the pack size P and the epochs E so that the grid's 8 configs fit into the time left.

        Per config and epoch: P*(train images)/(rate at P) + P*(val+test images)/(2.5 x suite rate) seconds, with
        the rate at P interpolated between the measured 1-model and K-pack rates; plus the data loading that
        every member repeats.  P is the largest of K, 5, 2, 1 that still allows the minimum epochs.
        """
        st = self.st
        n_member = n_train - n_train // folds
        n_eval = n_train // folds + n_test
        avail = self.budget.left() - st["reserve_s"]
        k = st["pack"]
        cost, fixed = {}, {}
        for row in TRAIN_ROWS:
            r = self.rates.get(("convpool_c", row))
            if not r:
                return {"epochs": 0, "pack": 1, "reason": f"no bench rate for convpool_c:{row}"}
            t1 = n_member / r["suite_images_per_s"]
            packed = r.get(f"packed{k}_images_per_s")
            tk = k * n_member / packed if packed else k * t1  # no pack measured: assume no gain
            cost[row] = lambda p, t1=t1, tk=tk, r=r: ((t1 + (tk - t1) * (p - 1) / max(k - 1, 1))
                                                       + p * n_eval / (2.5 * r["suite_images_per_s"]))
            fixed[row] = lambda p: p * (1.5 * load_s + 0.5) + 2.0
        chosen = None
        for p in sorted({min(k, folds), 5, 2, 1}, reverse=True):
            if p > folds:
                continue
            per_epoch = sum(len(LR_GRID) * cost[row](p) for row in TRAIN_ROWS) * 1.3  # 30% margin
            fixed_all = sum(len(LR_GRID) * fixed[row](p) for row in TRAIN_ROWS)
            e = int((avail - fixed_all) // per_epoch) if avail > fixed_all else 0
            e = min(e, st["train_max_epochs"])
            if e >= st["train_min_epochs"]:
                chosen = (p, e)
                break
            if chosen is None or e > chosen[1]:  # none reaches the minimum: the most epochs
                chosen = (p, e)
        p, e = chosen
        ms = sorted({max(1, round(e * m / 350)) for m in (200, 250, 300)} - {e}) if e > 1 else []
        predicted = {row: round(e * cost[row](p) * 1.3 + fixed[row](p), 2) for row in TRAIN_ROWS}
        return {"pack": p, "epochs": e, "milestones": ms, "predicted_s": predicted, "available_s": round(avail, 1),
                "data_load_s": round(load_s, 2),
                "schedule": f"multistep, lr x0.1 at epochs {ms} of {e} (the paper's 200/250/300 of 350, scaled)"}

    def data(self) -> dict:
        """The CIFAR-10 the kit trains on (found, unpacked or generated once)."""
        if not hasattr(self, "_data"):
            self._data = find_data(self.args, self.st, self.carry, self.work)
        return self._data

    # ------------------------------------------------------------------------------------------ estimate
    def estimate_env(self) -> tuple[dict, dict]:
        """plan_sweep's environment: run keys fingerprint each dataset, so both CIFAR roots must hold data.

        CIFAR-10 is the kit's own (real when carried); CIFAR-100 is not carried, so unless $CRELU_CIFAR100_ROOT
        holds it a small generated copy stands in.  The GPU-hours do not depend on it: plan_sweep counts the
        full 50,000 training images of each dataset.
        """
        env = subprocess_env(self.boot, self.work / "hydra")
        env["CRELU_DATA_ROOT"] = self.data()["root"]
        c100 = os.environ.get("CRELU_CIFAR100_ROOT")
        if c100 and (Path(c100) / "cifar-100-python" / "train").exists():
            roots = {"cifar100": "given"}
        else:
            from crelu.data import write_fake_cifar

            c100 = str(write_fake_cifar(self.work / "gen_c100", "cifar100", n_train=200, n_test=100, seed=0))
            roots = {"cifar100": "generated stand-in (run keys only)"}
        env["CRELU_CIFAR100_ROOT"] = c100
        return env, {"cifar10": self.data()["source"], **roots}

    def start_estimates(self, pool: ThreadPoolExecutor) -> list:
        fam_rows = {"table1": [("convpool_c", "baseline"), ("convpool_c", "crelu")], "table2": [("vgg", "baseline")]}
        k = self.st["pack"]
        jobs_all = self.st["estimate_jobs"]
        futures = []
        env, self.estimate_data = self.estimate_env()
        cwd = self.work / "estimate"
        cwd.mkdir(parents=True, exist_ok=True)
        for table, keys in fam_rows.items():
            got = [self.rates[x] for x in keys if x in self.rates]
            if table not in self.st["estimate_tables"]:
                continue
            if not got:
                continue
            suite = statistics.mean(r["suite_tflops"] for r in got)
            packs = [r[f"packed{k}_tflops"] for r in got if r.get(f"packed{k}_tflops")]
            packed = statistics.mean(packs) if packs else None
            folds = jobs_all.split(",") if jobs_all else [f"fold{i}" for i in range(10)]
            folds = [j for j in folds if j.startswith("fold")]
            packed_folds = [j for j in folds if int(j[4:]) % k == 0]
            variants = {"single": (["single"], suite, []), "folds": (folds, suite, []),
                        "folds_packed": (packed_folds, packed, [f"protocol.pack={k}"])}
            for name, (jobs, tflops, extra) in variants.items():
                if name not in self.st["estimate_variants"] or tflops is None:
                    continue
                cmd = [sys.executable, str(REPO / "scripts" / "plan_sweep.py"), table, "--profile", "paper",
                       "--jobs", ",".join(jobs), "--tflops", f"{tflops:.6g}", *extra]
                futures.append(((table, name, jobs, tflops, [f"{x}:{y}" for x, y in keys if (x, y) in self.rates],
                                 extra), pool.submit(self.plans.run, cmd, cwd, env)))
        return futures

    def collect_estimates(self, futures: list) -> dict:
        out: dict = {"tables": {}, "note": (
            "scripts/plan_sweep.py (make tableN DRY_RUN=1) fed --tflops = the suite's TFLOP/s measured above "
            "(mean over the table's measured rows, eager, bf16); 'packed': fold jobs with protocol.pack=K at the "
            "K-pack rate; Single jobs ignore pack.  Run from an empty folder: every job counted as new.  Each "
            "dataset counts its full 50,000 training images whatever data the run keys were computed from."),
            "data_for_run_keys": getattr(self, "estimate_data", None)}
        for (table, name, jobs, tflops, rows, extra), fut in futures:
            left = max(1.0, self.budget.left())
            try:
                res = fut.result(timeout=left)
            except Exception as e:  # noqa: BLE001
                res = {"error": f"{type(e).__name__}: {e}"}
            t = out["tables"].setdefault(table, {"rates_from": rows})
            t[name] = {"jobs": ",".join(jobs), "tflops": tflops, "overrides": extra, **res}
        for t in out["tables"].values():
            if all("gpu_hours" in t.get(v, {}) for v in ("single", "folds", "folds_packed")):
                t["total_gpu_hours"] = t["single"]["gpu_hours"] + t["folds"]["gpu_hours"]
                t["total_gpu_hours_packed"] = t["single"]["gpu_hours"] + t["folds_packed"]["gpu_hours"]
        return out


def rate(prefix: str, ips: float, fpi: float, peak: float | None, sheet: float | None) -> dict:
    tflops = ips * fpi / 1e12
    return {f"{prefix}_images_per_s": ips, f"{prefix}_tflops": tflops,
            f"{prefix}_mfu": tflops / peak if peak else None,
            f"{prefix}_mfu_datasheet": tflops / sheet if sheet else None}


def measure_copy_gbps(torch, device, reps: int = 10) -> dict:
    """Device-to-device copy bandwidth (bytes read + written), median of ``reps`` copies of 1 GiB (CPU: 64 MiB)."""
    n = (1 << 30) if device.type == "cuda" else (64 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"gb_per_s": 2 * n / t / 1e9, "bytes": n, "reps": reps}


def summarise_events(events, wall_s: float) -> dict:
    """Counts and times of one profiled epoch: device kernels, copies, syncs, host time, top kernels/ops."""
    from torch.autograd import DeviceType

    dev = [e for e in events if e.device_type != DeviceType.CPU]
    cpu = [e for e in events if e.device_type == DeviceType.CPU]
    kernels = [e for e in dev if not e.name.startswith(("Memcpy", "Memset"))]
    intervals = sorted((e.time_range.start, e.time_range.end) for e in dev)
    busy, cur_s, cur_e = 0.0, None, None
    for a, b in intervals:  # union: overlapping kernels on several streams count once
        if cur_e is None or a > cur_e:
            busy += (cur_e - cur_s) if cur_e is not None else 0.0
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    busy += (cur_e - cur_s) if cur_e is not None else 0.0
    syncs = [e for e in cpu if e.name in SYNC_APIS]
    groups: dict[str, list[float]] = {}
    src = kernels if kernels else [e for e in cpu if e.name.startswith("aten::")]
    for e in src:
        us = e.time_range.elapsed_us() if kernels else e.self_cpu_time_total
        groups.setdefault(e.name, []).append(us)
    total = sum(sum(v) for v in groups.values()) or 1.0
    top = sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:12]
    return {
        "wall_ms": 1e3 * wall_s, "device_busy_ms": busy / 1e3, "kernel_ms": sum(e.time_range.elapsed_us()
                                                                               for e in kernels) / 1e3,
        "host_self_ms": sum(e.self_cpu_time_total for e in cpu if not e.is_async) / 1e3,
        "sync_wait_ms": sum(e.time_range.elapsed_us() for e in syncs) / 1e3,
        "syncs": len(syncs), "dtoh": sum("DtoH" in e.name for e in dev), "htod": sum("HtoD" in e.name for e in dev),
        "items": sum(e.name == "aten::_local_scalar_dense" for e in cpu), "kernels": len(kernels),
        "top_kind": "device kernels" if kernels else "host aten ops (self CPU time)",
        "top": [{"name": name[:160], "calls": len(v), "ms": sum(v) / 1e3, "share": sum(v) / total}
                for name, v in top],
    }


def per_step(summ: dict, s1: int, s2: int) -> dict:
    a, b = summ[s1], summ[s2]
    out = {}
    for key, name in [("wall_ms", "wall_ms_per_step_profiled"), ("device_busy_ms", "device_busy_ms_per_step"),
                      ("kernel_ms", "kernel_ms_per_step"), ("host_self_ms", "host_ms_per_step"),
                      ("sync_wait_ms", "sync_wait_ms_per_step"), ("kernels", "kernels_per_step"),
                      ("dtoh", "dtoh_per_step"), ("htod", "htod_per_step"), ("items", "items_per_step")]:
        slope = (b[key] - a[key]) / (s2 - s1)
        out[name] = slope
        out[name.replace("per_step", "per_epoch_fixed")] = a[key] - slope * s1
    has_dev = b["kernels"] > 0
    out["syncs_per_step"] = (b["syncs"] - a["syncs"]) / (s2 - s1) if has_dev else out["items_per_step"]
    out["syncs_per_epoch_fixed"] = ((a["syncs"] if has_dev else a["items"]) - out["syncs_per_step"] * s1)
    out["sync_counted"] = "CUDA sync API calls" if has_dev else "item() calls (CPU: no device events)"
    out["top_kind"] = b["top_kind"]
    return out


def save_trace(prof, path: Path) -> dict:
    tmp = path.with_suffix("")  # .json
    prof.export_chrome_trace(str(tmp))
    with open(tmp, "rb") as f, gzip.open(path, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g)
    tmp.unlink()
    size = path.stat().st_size
    if size > 15 * 2**20:  # results come back at most 16 MiB a file
        path.unlink()
        return {"file": None, "note": f"trace of {size} bytes dropped (over 15 MiB)"}
    return {"file": path.name, "bytes": size}


class PlanRunner:
    """Runs ``scripts/plan_sweep.py`` subprocesses (from a thread pool) and can kill the ones still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def run(self, cmd: list[str], cwd: Path, env: dict) -> dict:
        t0 = time.perf_counter()
        with self.lock:
            p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(p)
        stdout, stderr = p.communicate()
        tail = stdout.strip().splitlines()[-1:] if stdout.strip() else []
        m = re.search(r"(\d+) jobs \((\d+) finished.*estimated ([\d,.]+) GPU-hours", stdout)
        out = {"returncode": p.returncode, "wall_s": round(time.perf_counter() - t0, 1), "summary": tail,
               "command": " ".join(["python", "scripts/plan_sweep.py", *cmd[2:]])}
        if m:
            out.update(jobs=int(m.group(1)), gpu_hours=float(m.group(3).replace(",", "")))
        else:
            out["error"] = (stderr.strip().splitlines() or ["no summary line"])[-1][:300]
        return out

    def kill_all(self) -> None:
        with self.lock:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()


def read_records(root: Path) -> dict:
    """Per-fold final numbers from the run.json records a (packed) k-fold job wrote under ``root``."""
    folds = []
    for f in sorted(root.rglob("run.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        final, eps = rec.get("final") or {}, rec.get("epochs") or []
        folds.append({"fold": (rec.get("config") or {}).get("protocol", {}).get("fold"), "status": rec.get("status"),
                      "epochs": len(eps), "val_error": final.get("val_error"), "test_error": final.get("test_error"),
                      "train_loss": final.get("train_loss", eps[-1].get("train_loss") if eps else None),
                      "images_per_s_last_epoch": eps[-1].get("images_per_s") if eps else None,
                      "failure": (rec.get("failure") or {}).get("message")})
    ok = [f for f in folds if f["status"] == "finished" and f["val_error"] is not None]
    out = {"folds": folds, "folds_finished": len(ok)}
    for key in ("val_error", "test_error"):
        vals = [f[key] for f in ok if f[key] is not None]
        if vals:
            out[f"{key}_mean"] = statistics.mean(vals)
            out[f"{key}_min"], out[f"{key}_max"] = min(vals), max(vals)
    return out


def best_lr(configs: list[dict]) -> dict:
    out = {}
    for row in TRAIN_ROWS:
        ok = [c for c in configs if c["row"] == row and c.get("val_error_mean") is not None]
        if ok:
            b = min(ok, key=lambda c: c["val_error_mean"])
            out[row] = {"lr": b["lr"], "val_error_mean": b["val_error_mean"],
                        "test_error_mean": b.get("test_error_mean"), "configs_compared": len(ok)}
    return out


# ---------------------------------------------------------------------------------------------- markdown
def fmt_num(x, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:,.{nd}f}"


def fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(r: dict) -> str:
    v = r["versions"]
    git = r.get("git") or {}
    lines = [f"# GPU check: {r['device_name']}, {r['created_at']}", ""]
    if r["dry"]:
        lines += ["**DRY MODE**: CPU, tiny widths and step counts. These numbers only show that the kit runs; they "
                  "say nothing about a GPU.", ""]
    lines += ["| | |", "|---|---|", f"| device | {r['device_name']} ({r['device_type']}) |",
              f"| versions | python {v.get('python')}, torch {v.get('torch')}, torchvision {v.get('torchvision')}, "
              f"CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, hydra {v.get('hydra')}, omegaconf {v.get('omegaconf')} |",
              f"| commit | {git.get('commit')}{' (dirty)' if git.get('dirty') else ''} |",
              f"| date (UTC) | {r['created_at']} |", f"| budget / elapsed | {r['budget_s']:.0f} s / "
              f"{r.get('elapsed_s', 0):.0f} s |", ""]
    secs = r["sections"]
    pk = secs.get("peak") or {}
    if "matmul" in pk:
        m = pk["matmul"]
        lines += [f"Measured matmul rate: **{m['tflops']:.1f} TFLOP/s** ({m['dtype']}, {m['n']}^3, median of "
                  f"{m['reps']}); datasheet dense bf16: {fmt_num(pk.get('datasheet_bf16_tflops'), 0)}; copy "
                  f"bandwidth {pk['copy']['gb_per_s']:.0f} GB/s. MFU below is against the measured rate.", ""]
    b = secs.get("bench") or {}
    if b.get("rows"):
        k = r["settings"]["pack"]
        comp = {(c["family"], c["row"]): c for c in (secs.get("compile") or {}).get("rows", []) if "speedup" in c}
        lines += ["## 1. Training throughput (full width)" if not r["dry"] else "## 1. Training throughput", "",
                  f"batch {r['settings']['batch']} per model, width x{r['settings']['width_scale']}", "",
                  f"| model | suite img/s | TFLOP/s | MFU | plain loop img/s | suite / plain | compiled img/s | "
                  f"compile speedup | {k} packed img/s | {k} packed time / 1 model |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in b["rows"]:
            if "suite_images_per_s" not in x:
                why = x.get("skipped") or x.get("error", "")
                lines.append(f"| {x['family']}:{x['row']} | not measured: {why[:80]} |||||||||")
                continue
            c = comp.get((x["family"], x["row"]), {})
            lines.append(f"| {x['family']}:{x['row']} | {x['suite_images_per_s']:,.0f} | {x['suite_tflops']:.2f} | "
                         f"{fmt_pct(x['suite_mfu'])} | {x['plain_images_per_s']:,.0f} | {x['suite_vs_plain']:.2f}x | "
                         f"{fmt_num(c.get('compiled_images_per_s'), 0)} | "
                         f"{fmt_num(c.get('speedup'))}{'x' if c else ''} | "
                         f"{fmt_num(x.get(f'packed{k}_images_per_s'), 0)} | {fmt_num(x.get('packed_time_ratio'))}x |")
        lines += ["", f"Targets (issue 15): ConvPool-CNN-C MFU >= {TARGETS['convpool_mfu']:.0%}, suite >= "
                  f"{TARGETS['suite_vs_plain']:.0f}x the plain loop, 10 packed folds <= "
                  f"{TARGETS['packed10_time_ratio']:.0f}x one model's time.", ""]
    p = secs.get("profile") or {}
    if p.get("models"):
        lines += ["## 2. Profile of the suite's training step", "",
                  "| model | wall ms/step | device busy ms/step | busy | host ms/step | kernels/step | syncs/step | "
                  "syncs/epoch (fixed) | DtoH/step |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in p["models"]:
            if "top" not in m:
                why = m.get("skipped") or m.get("error", "")
                lines.append(f"| {m['family']}:{m['row']} | not measured: {why[:80]} ||||||||")
                continue
            lines.append(f"| {m['family']}:{m['row']} | {fmt_num(m.get('wall_ms_per_step_unprofiled'))} | "
                         f"{fmt_num(m['device_busy_ms_per_step'])} | {fmt_pct(m.get('device_busy_fraction'))} | "
                         f"{fmt_num(m['host_ms_per_step'])} | {m['kernels_per_step']:.1f} | "
                         f"{m['syncs_per_step']:.2f} | {m['syncs_per_epoch_fixed']:.1f} | {m['dtoh_per_step']:.2f} |")
        first = next((m for m in p["models"] if "top" in m), None)
        if first:
            lines += ["", f"Top {first['top_kind']} of {first['family']}:{first['row']} ({p['steps'][1]}-step epoch):",
                      "", "| name | calls | ms | share |", "|---|---:|---:|---:|"]
            lines += [f"| `{t['name'][:90]}` | {t['calls']} | {t['ms']:.2f} | {t['share']:.1%} |" for t in first["top"]]
        lines += ["", p.get("note", ""), ""]
    t = secs.get("train") or {}
    if "plan" in t:
        d, pl = t["data"], t["plan"]
        lines += ["## 3. Real-data training (Table 1 lr grid)", "",
                  f"data: {d['source']} ({d['root']}), {t['train_images']} training / {t['test_images']} test "
                  f"images, {t['folds']}-fold k-fold, folds 0..{pl.get('pack', 1) - 1} packed; {pl.get('epochs')} "
                  f"epochs, {pl.get('schedule', '')}", ""]
        if d.get("note"):
            lines += [f"**{d['note']}**", ""]
        lines += ["| row | lr | status | folds done | epochs | val error % (mean, min-max) | test error % (mean) | "
                  "wall s |", "|---|---:|---|---:|---:|---|---:|---:|"]
        for c in t.get("configs", []):
            rng = (f"{fmt_num(c.get('val_error_mean'))} ({fmt_num(c.get('val_error_min'))}-"
                   f"{fmt_num(c.get('val_error_max'))})") if c.get("val_error_mean") is not None else "n/a"
            eps = max((f["epochs"] for f in c.get("folds", [])), default=0)
            lines.append(f"| {c['row']} | {c['lr']} | {c['status'][:60]} | {c.get('folds_finished', 0)}/{c['pack']} | "
                         f"{eps} | {rng} | {fmt_num(c.get('test_error_mean'))} | {fmt_num(c.get('wall_s'), 0)} |")
        for row, bl in (t.get("best_lr") or {}).items():
            lines.append(f"\nBest lr on validation, {row}: {bl['lr']} (val {bl['val_error_mean']:.2f}%, test "
                         f"{fmt_num(bl['test_error_mean'])}%, of {bl['configs_compared']} lrs)")
        lines.append("")
    e = secs.get("estimate") or {}
    if e.get("tables"):
        lines += ["## 4. GPU-hours to finish Tables 1 and 2 (DRY_RUN estimate from the measured rates)", "",
                  "| table | TFLOP/s fed (1 model / packed) | Single jobs | fold jobs, 1 model each | "
                  "fold jobs packed | total | total, packed |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, tb in e["tables"].items():
            def gh(v, tb=tb):
                x = tb.get(v) or {}
                return f"{x['gpu_hours']:,.1f} ({x['jobs']} jobs)" if "gpu_hours" in x else x.get("error", "n/a")[:60]
            one = next((tb[v].get("tflops") for v in ("single", "folds") if v in tb), None)
            pk = (tb.get("folds_packed") or {}).get("tflops")
            fed = " / ".join("n/a" if x is None else f"{x:.3g}" for x in (one, pk))
            lines.append(f"| {name} | {fed} | {gh('single')} | "
                         f"{gh('folds')} | {gh('folds_packed')} | {fmt_num(tb.get('total_gpu_hours'), 1)} | "
                         f"{fmt_num(tb.get('total_gpu_hours_packed'), 1)} |")
        lines += ["", e.get("note", ""), ""]
    if r.get("errors"):
        lines += ["## Errors", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()] + [""]
    lines += ["Section wall times (s): " + ", ".join(f"{k} {v}" for k, v in r.get("timings", {}).items()), ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder for gpu_check.{json,md} (default results/gpu/<date>-<device>)")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting work after this (GPU 420, dry 150)")
    p.add_argument("--carry", default=str(REPO / "gpu_carry"), help="folder from scripts/prepare_gpu_carry.py")
    p.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/ (else carry, else generated)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N")
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes (also GPU_CHECK_DRY=1)")
    p.add_argument("--sections", default="peak,bench,profile,compile,train,estimate",
                   help="comma list of sections to run (default all)")
    args = p.parse_args(argv)
    args.dry = args.dry or os.environ.get("GPU_CHECK_DRY", "") not in ("", "0")
    args.budget_s = args.budget_s or (150.0 if args.dry else 420.0)
    st = SETTINGS["dry" if args.dry else "gpu"]
    carry = Path(args.carry)
    boot = bootstrap(carry)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore", message=".*differ from the official.*")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    kit = None
    try:
        wanted = set(args.sections.split(","))
        out = Path(args.out) if args.out else None
        kit = Kit(args, st, out or work / "pending", work, carry, boot)
        if out is None:
            kit.out = REPO / ("results/gpu_dry" if args.dry else "results/gpu") / Path(kit.report["suggested_dir"]).name
        kit.out.mkdir(parents=True, exist_ok=True)
        print(f"[gpu_check] {kit.report['mode']} on {kit.device_name}; torch {kit.report['versions']['torch']}; "
              f"budget {args.budget_s:.0f}s; writing {kit.out}", flush=True)
        kit.save()
        pool = ThreadPoolExecutor(max_workers=6 if kit.device.type == "cuda" else 2)
        futures = []
        for name, fn in [("peak", kit.peak), ("bench", kit.bench), ("profile", kit.profile)]:
            if name in wanted:
                kit.section(name, fn)
        if "estimate" in wanted:
            futures = kit.start_estimates(pool)  # CPU subprocesses, in parallel with what follows
        for name, fn in [("compile", kit.compile_bench), ("train", kit.train)]:
            if name in wanted:
                kit.section(name, fn)
        if "estimate" in wanted:
            kit.section("estimate", lambda: kit.collect_estimates(futures))
        kit.plans.kill_all()  # estimates still running past the budget are cut (recorded as errors)
        pool.shutdown(wait=True, cancel_futures=True)
        kit.save()
        print(render_markdown(kit.report))
        print(f"[gpu_check] wrote {kit.out / 'gpu_check.json'} and gpu_check.md in {kit.budget.elapsed():.0f}s; "
              f"commit them under {kit.report['suggested_dir']}/", flush=True)
        return kit.report
    finally:
        if kit is not None:
            kit.plans.kill_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
