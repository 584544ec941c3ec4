"""ImageNet (ILSVRC-2012) for Tables 4/5: ImageFolder files, AlexNet augmentation, multi-worker batches.

Layout (torchvision ``ImageFolder``; the folder names are the WordNet ids)::

    ROOT/train/n01440764/n01440764_10026.JPEG  ...  (1,281,167 images, 1000 folders)
    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG  ...  (50,000 images, the same 1000 folders)

ROOT is ``dataset.root``: ``$CRELU_IMAGENET_ROOT`` if set, else ``data/imagenet``.  The official validation
tarball is flat (``val/ILSVRC2012_val_*.JPEG``).  The devkit (``ILSVRC2012_devkit_t12.tar.gz``: the ground truth
``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``, read by torchvision; needs scipy) sorts it into
class folders with one shell line, run in ROOT next to the devkit tarball::

    python -c "import torchvision.datasets.imagenet as i; i.parse_devkit_archive('.'); \\
    print(*i.load_meta_file('.')[1], sep='\\n')" > val_wnids.txt && paste -d' ' <(ls val/*.JPEG | sort) \\
    val_wnids.txt | while read f w; do mkdir -p val/$w && mv "$f" val/$w/; done

Pipeline (docs/recipes.md; [BASE-RECALL: Krizhevsky et al. 2012]):

* every image: shorter side resized to ``dataset.resize`` (bilinear, antialiased), then the central
  ``resize x resize`` square (AlexNet's 256x256);
* training: a random ``dataset.image_size`` crop of that square, a horizontal flip (``dataset.flip``), PCA
  lighting noise with ``alpha ~ N(0, dataset.lighting_std)`` on AlexNet's RGB eigenvectors (0 disables);
* per-channel mean/std normalisation with the standard ImageNet training-set statistics (INFERRED: the paper
  says per-channel mean/std; these constants are the usual ones, also used for the generated smoke set);
* evaluation: ``test`` (every epoch) is the centre crop; ``DataBundle.crop_eval`` feeds the final top-1/top-5
  errors (%) for the centre crop and the 10 patches (:mod:`crelu.evaluation.tenpatch`) per
  ``protocol.eval_mode``.  ``dataset.train_subset``/``test_subset`` keep a class-stratified subset (INFERRED
  for val: its files are sorted by class, so "the first N" would be one class).

Eigenvalues/vectors are fb.resnet.torch's AlexNet values for pixels in [0, 1] (INFERRED scale); JPEGs are opened
with PIL's ``draft`` (DCT-domain downscaling that never goes below ``resize``; INFERRED speed-up).

Reproducibility: each epoch draws a permutation and one seed per position from the trainer's data generator;
an image's crop, flip and lighting come from its seed alone, so an epoch is the same for any number of
workers or DDP ranks.  Under DDP rank r takes the r-th contiguous block of each global batch and a contiguous
block of the validation set (:mod:`crelu.training.distributed`).

Decoding: CPU by default (PIL in ``dataset.workers`` DataLoader processes, pinned memory on CUDA, persistent
workers, prefetch).  ``CRELU_IMAGENET_DECODE=gpu`` (or a ``dataset.decode: gpu`` key, if the schema has one)
makes workers read the raw bytes and the training device decode, resize, crop and flip them
(``torchvision.io.decode_jpeg(device="cuda")``); it is used only when the device is CUDA, otherwise ignored with
a warning.  Its resize is torch's antialiased bilinear, so pixels differ slightly from PIL's.  (torchvision 0.29
deprecates ``torchvision.io``'s codecs in favour of TorchCodec; they still work, and the warning is silenced.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from crelu.data.cifar import DataNotFoundError
from crelu.data.module import CropEval, DataBundle
from crelu.data.sharding import block, check_global_batch
from crelu.evaluation.tenpatch import EVAL_MODES, center_crop, center_offset

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
DECODE_ENV = "CRELU_IMAGENET_DECODE"

_HINT = ("  To fix: point the suite at the folder DIR that holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG:\n"
         "      export CRELU_IMAGENET_ROOT=DIR      (or pass dataset.root=DIR)\n"
         "  The flat validation tarball must first be sorted into class folders (see the docstring of\n"
         "  crelu.data.imagenet); a tiny generated copy: python scripts/make_tiny_imagenet.py --out DIR")


@dataclass
class FolderIndex:
    """The files of one split: paths relative to ``folder`` (bytes, so DataLoader workers share the pages)."""

    folder: Path
    classes: list[str]
    paths: np.ndarray  # dtype S: "<wnid>/<file>"
    labels: np.ndarray  # int64


def scan_split(root: Path, split: str) -> FolderIndex:
    """Index ``root/split/<class>/*``; a missing or malformed folder raises :class:`DataNotFoundError`."""
    folder = root / split
    expect = f"Expected {root}/{split}/<wnid>/*.JPEG (one folder per class, the same classes in train/ and val/)."
    if not folder.is_dir():
        raise DataNotFoundError(f"ImageNet not found: {folder} is not a folder. {expect}\n{_HINT}")
    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as e:
        flat = any(p.suffix.lower() in IMG_EXTENSIONS for p in folder.iterdir() if p.is_file())
        why = " It holds images directly: the flat validation layout, which needs sorting." if flat else ""
        raise DataNotFoundError(f"ImageNet {split} set at {folder} is malformed: {str(e).rstrip('.')}.{why} "
                                f"{expect}\n{_HINT}") from None
    prefix = len(str(folder)) + 1
    paths = np.array([p[prefix:].encode() for p, _ in samples], dtype=np.bytes_)
    return FolderIndex(folder, classes, paths, np.array([t for _, t in samples], dtype=np.int64))


def aug_params(seed: int, resize: int, size: int, flip: bool,
               lighting_std: float) -> tuple[int, int, bool, np.ndarray]:
    """``(top, left, flip, alpha[3])`` of one training image, a function of its seed (all drawn, then masked)."""
    rng = np.random.default_rng(seed)
    top, left = (int(v) for v in rng.integers(0, resize - size + 1, size=2))
    mirror = bool(rng.random() < 0.5) and flip
    alpha = rng.normal(0.0, 1.0, 3).astype(np.float32) * np.float32(lighting_std)
    return top, left, mirror, alpha


def load_square(path: str, resize: int) -> Image.Image:
    """RGB image, shorter side resized to ``resize``, central ``resize x resize`` square."""
    with Image.open(path) as im:
        im.draft("RGB", (resize, resize))  # JPEG: decode at 1/2, 1/4 or 1/8 scale if still >= resize
        im = im.convert("RGB")
    return TF.center_crop(TF.resize(im, resize), resize)


class _Images(Dataset):
    """Item ``(index, seed)`` -> ``(uint8 [S, S, 3], label, alpha[3])``; raw mode: ``(bytes, label, params[6])``."""

    def __init__(self, ix: FolderIndex, *, resize: int, size: int, flip: bool, lighting_std: float, train: bool,
                 raw: bool) -> None:
        self.folder, self.paths, self.labels = str(ix.folder), ix.paths, ix.labels
        self.resize, self.size, self.flip, self.lighting = resize, size, flip, lighting_std
        self.train, self.raw = train, raw

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        i, seed = item
        path = os.path.join(self.folder, self.paths[i].decode())
        label = int(self.labels[i])
        top, left, mirror, alpha = (aug_params(seed, self.resize, self.size, self.flip, self.lighting) if self.train
                                    else (0, 0, False, np.zeros(3, np.float32)))
        if self.raw:
            with _quiet_tv():
                data = read_file(path)
            return data, label, torch.tensor([top, left, float(mirror), *alpha.tolist()])
        img = load_square(path, self.resize)
        if self.train:
            img = img.crop((left, top, left + self.size, top + self.size))
            if mirror:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(img), label, alpha


@contextlib.contextmanager
def _quiet_tv():
    """torchvision 0.29 deprecates torchvision.io's codecs (in favour of TorchCodec) with a warning per call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _collate(batch):
    """uint8 HWC images stacked by numpy (one memcpy; into shared memory in a worker), labels, alphas."""
    imgs = [b[0] for b in batch]
    out = torch.empty((len(imgs), *imgs[0].shape), dtype=torch.uint8)
    if get_worker_info() is not None:
        out.share_memory_()
    np.stack(imgs, out=out.numpy())
    return out, torch.tensor([b[1] for b in batch]), torch.from_numpy(np.stack([b[2] for b in batch]))


def _collate_raw(batch):
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch]), torch.stack([b[2] for b in batch])


def decode_squares(data: list[torch.Tensor], device: torch.device, resize: int) -> torch.Tensor:
    """Decode JPEG bytes on ``device``; shorter side -> ``resize``, central square.  float [N, 3, R, R] in 0..255."""
    with _quiet_tv():
        try:
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # a PNG or CMYK file among the JPEGs: decode one by one, falling back to the CPU
            imgs = []
            for d in data:
                try:
                    imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    imgs.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
    out = []
    for im in imgs:
        h, w = im.shape[-2:]
        nh, nw = (resize, int(resize * w / h)) if h <= w else (int(resize * h / w), resize)
        x = F.interpolate(im[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        t, l = center_offset(nh, resize), center_offset(nw, resize)
        out.append(x[0, :, t : t + resize, l : l + resize])
    return torch.stack(out).clamp_(0, 255).round_()


class _Finish:
    """Host batch -> device ``(x, y)``: decode (raw), crop/flip (raw train), lighting, normalise, centre crop."""

    def __init__(self, device: torch.device, *, resize: int, size: int, raw: bool, train: bool, lighting: bool,
                 crop: bool, channels_last: bool) -> None:
        self.device, self.resize, self.size, self.raw, self.train = device, resize, size, raw, train
        self.lighting, self.crop, self.channels_last = lighting, crop, channels_last
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self.pca = (torch.tensor(PCA_EIGVEC, device=device), torch.tensor(PCA_EIGVAL, device=device))

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        data, y, params = batch
        y = y.to(self.device, non_blocking=True)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.raw:
            x = decode_squares(data, self.device, self.resize)
            if self.train:
                s, crops = self.size, []
                for img, (t, l, m) in zip(x, params[:, :3].long().tolist()):
                    c = img[:, t : t + s, l : l + s]
                    crops.append(c.flip(-1) if m else c)
                x = torch.stack(crops)
            alpha = params[:, 3:].to(self.device, non_blocking=True)
        else:
            x = data.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous(memory_format=fmt).float()
            alpha = params.to(self.device, non_blocking=True)
        # (x/255 + rgb - mean) / std in two passes; rgb_i = sum_j eigvec[i, j] alpha_j eigval_j (PCA lighting)
        shift = -self.mean
        if self.lighting:
            vec, val = self.pca
            shift = shift + ((alpha * val) @ vec.T).view(-1, 3, 1, 1)
        x = x.mul_(1.0 / (255.0 * self.std)).add_(shift / self.std)
        if self.crop:
            x = center_crop(x, self.size)
        return x.contiguous(memory_format=fmt), y


class _Plan:
    """Batch sampler of a DataLoader: yields the batches of ``(index, seed)`` set for the current epoch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class LoaderBatches:
    """The batches interface (``epoch(gen, max_steps, start)``, ``len``, ``num_examples``) over a DataLoader.

    ``items`` are dataset indices.  With ``shuffle`` each epoch draws a permutation and per-position seeds from
    ``gen``; a global batch is ``batch_size`` positions, of which rank ``rank`` of ``world`` takes its block.
    """

    def __init__(self, loader: DataLoader, plan: _Plan, items: np.ndarray, finish: _Finish, *, batch_size: int,
                 shuffle: bool, drop_last: bool, rank: int = 0, world: int = 1, total: int | None = None) -> None:
        self.loader, self.plan, self.items, self.finish = loader, plan, items, finish
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world = rank, world
        self.local = check_global_batch(batch_size, drop_last, world)
        self.total = len(items) if total is None else total

    def __len__(self) -> int:
        n = len(self.items)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return self.total

    def with_finish(self, finish: _Finish) -> LoaderBatches:
        """Another view of the same files and workers with a different device-side finish."""
        return LoaderBatches(self.loader, self.plan, self.items, finish, batch_size=self.batch_size,
                             shuffle=self.shuffle, drop_last=self.drop_last, rank=self.rank, world=self.world,
                             total=self.total)

    def batches(self, gen: torch.Generator | None, max_steps: int | None) -> list[list[tuple[int, int]]]:
        """This rank's ``[(dataset index, seed), ...]`` per step of the next epoch (draws from ``gen``)."""
        n = len(self.items)
        if self.shuffle:
            order = torch.randperm(n, generator=gen).numpy()
            seeds = torch.randint(0, 2**62, (n,), generator=gen).numpy()
        else:
            order, seeds = np.arange(n), np.zeros(n, dtype=np.int64)
        steps = len(self) if max_steps is None else min(len(self), max_steps)
        out = []
        for s in range(steps):
            lo = s * self.batch_size + self.rank * self.local
            hi = min(lo + self.local, n)
            out.append([(int(self.items[order[p]]), int(seeds[p])) for p in range(lo, hi)])
        return out

    def epoch(self, gen: torch.Generator | None = None, max_steps: int | None = None, start: int = 0):
        """Batches of one epoch; ``start`` skips that many (mid-epoch resume: the draws are made all the same)."""
        self.plan.batches = self.batches(gen, max_steps)[start:]
        for batch in self.loader:
            yield self.finish(batch)


def use_device_decode(cfg, device: torch.device) -> bool:
    """The optional on-device JPEG path: asked for by ``$CRELU_IMAGENET_DECODE``/``dataset.decode`` and CUDA."""
    want = os.environ.get(DECODE_ENV) or cfg.dataset.decode
    if want not in ("cpu", "gpu"):
        raise ValueError(f"{DECODE_ENV} / dataset.decode must be cpu or gpu, got {want!r}")
    if want == "gpu" and device.type != "cuda":
        warnings.warn(f"{DECODE_ENV}=gpu needs a CUDA device (training on {device}); decoding on the CPU",
                      RuntimeWarning, stacklevel=2)
        return False
    return want == "gpu"


def _subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    from crelu.data.splits import stratified_subset

    return np.arange(len(labels)) if n is None or n >= len(labels) else stratified_subset(labels, n, seed)


def build_imagenet(cfg, device: torch.device, channels_last: bool = False, rank: int = 0, world: int = 1
                   ) -> DataBundle:
    """Index ``dataset.root``, check it, and build the training / validation batches for this rank."""
    d, p, t = cfg.dataset, cfg.protocol, cfg.train
    if p.name != "full":
        raise ValueError(f"ImageNet runs use protocol=full (Tables 4/5 report the validation set), got {p.name!r}")
    if p.eval_mode not in EVAL_MODES:
        raise ValueError(f"protocol.eval_mode must be one of {EVAL_MODES}, got {p.eval_mode!r}")
    if not 0 < d.image_size <= d.resize:
        raise ValueError(f"dataset.image_size={d.image_size} must be in 1..dataset.resize={d.resize}")
    root = Path(d.root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"ImageNet not found: {root} is not a folder (dataset.root). Expected "
                                f"{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG.\n{_HINT}")
    tr, va = scan_split(root, "train"), scan_split(root, "val")
    if tr.classes != va.classes:
        only_t, only_v = sorted(set(tr.classes) - set(va.classes)), sorted(set(va.classes) - set(tr.classes))
        raise DataNotFoundError(f"ImageNet at {root}: train/ and val/ have different class folders "
                                f"({len(only_t)} only in train/, e.g. {only_t[:3]}; {len(only_v)} only in val/, "
                                f"e.g. {only_v[:3]}).\n{_HINT}")
    if len(tr.classes) != d.num_classes:
        raise ValueError(f"{root} has {len(tr.classes)} class folders but dataset.num_classes={d.num_classes}; "
                         f"pass dataset.num_classes={len(tr.classes)} (the model's classifier is built from it)")
    r = rank
    raw = use_device_decode(cfg, device)
    common = dict(resize=d.resize, size=d.image_size, flip=d.flip, lighting_std=d.lighting_std, raw=raw)
    fin = dict(resize=d.resize, size=d.image_size, raw=raw, channels_last=channels_last)
    workers = max(int(d.workers), 0)
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
              prefetch_factor=4 if workers > 0 else None, collate_fn=_collate_raw if raw else _collate)

    train_plan, val_plan = _Plan(), _Plan()
    train_items = _subset(tr.labels, d.train_subset, p.split_seed)
    train = LoaderBatches(
        DataLoader(_Images(tr, train=True, **common), batch_sampler=train_plan, **kw), train_plan, train_items,
        _Finish(device, train=True, lighting=d.lighting_std > 0, crop=False, **fin),
        batch_size=t.batch_size, shuffle=True, drop_last=t.drop_last, rank=r, world=world)
    val_items = _subset(va.labels, d.test_subset, p.split_seed)
    lo, hi = block(len(val_items), r, world)
    full_val = LoaderBatches(
        DataLoader(_Images(va, train=False, **common), batch_sampler=val_plan, **kw), val_plan, val_items[lo:hi],
        _Finish(device, train=False, lighting=False, crop=False, **fin),
        batch_size=t.eval_batch_size, shuffle=False, drop_last=False, total=len(val_items))
    test = full_val.with_finish(_Finish(device, train=False, lighting=False, crop=True, **fin))
    log.info("ImageNet %s: %d classes, %d train / %d val images%s, decode on %s", root, len(tr.classes),
             len(train_items), len(val_items), f" (rank {r} of {world})" if world > 1 else "",
             device if raw else "cpu")
    return DataBundle(train, {"test": test}, d.num_classes, list(IMAGENET_MEAN), list(IMAGENET_STD),
                      crop_eval=CropEval(full_val, d.image_size, p.eval_mode, channels_last), sharded=True)
