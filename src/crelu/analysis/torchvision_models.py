"""Any torchvision classification network, for the analyses that only need its conv filters (pairing, µ).

``load_torchvision("resnet18", weights=...)`` builds the model through ``torchvision.models.get_model``:

* ``weights=None``: torchvision's own random initialisation (seeded), i.e. the reference a trained net is
  compared against;
* ``weights="DEFAULT"`` or a weights name (``"IMAGENET1K_V1"``, or ``"ResNet18_Weights.IMAGENET1K_V1"``):
  torchvision's weights API.  The file comes from torchvision's cache (``$TORCH_HOME/hub/checkpoints``) or is
  downloaded there (torchvision checks its hash).  ``offline=True`` never touches the network.  A missing file
  is one line naming the path where it was looked for;
* ``weights=<path to a file>``: a state dict saved by the user (``torch.save(model.state_dict(), path)``, also
  inside a ``{"state_dict": ...}`` or ``{"model": ...}`` dict, ``module.`` prefixes allowed).

**Loading is never unpickling arbitrary objects.**  Weights files come from other people, and ``torch.load``
with ``weights_only=False`` runs any code a pickle contains, so every file here is read with
``weights_only=True`` (tensors and plain containers only); torchvision's cached files too (its loader is called
with ``weights_only=True``).  A file holding a pickled ``nn.Module`` is refused with a message saying to save
the state dict instead.  (The suite's own training checkpoints, :mod:`crelu.training.checkpoint`, still use full
unpickling because they hold Python RNG states and config objects that the suite itself wrote.)
"""

from __future__ import annotations

import contextlib
import difflib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn


class ModelLoadError(RuntimeError):
    """A model or its weights cannot be had; the message is one line meant for the user."""


def classification_models() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


def check_model_name(name: str) -> str:
    names = classification_models()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see torchvision.models.list_models())"
    raise ModelLoadError(f"{name!r} is not a torchvision classification model{hint}")


def weights_cache_path(weights) -> Path:
    """Where torchvision keeps (and looks for) the file of a weights enum member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def resolve_weights(name: str, spec: str):
    """The torchvision weights enum member that ``spec`` names for model ``name`` (``DEFAULT``, ``IMAGENET1K_V1``)."""
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    key = spec.split(".", 1)[1] if spec.startswith(enum.__name__ + ".") else spec
    try:
        return enum[key]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ModelLoadError(f"{name} has no weights {spec!r}; torchvision offers: {names}") from None


@contextlib.contextmanager
def _hub_weights_only() -> Iterator[None]:
    """Make torchvision's weights loader read its files with ``weights_only=True``."""
    import functools

    try:
        import torchvision.models._api as api
    except ImportError:  # a torchvision that moved its loader: leave it as it is
        yield
        return
    original = getattr(api, "load_state_dict_from_url", None)
    if original is None:
        yield
        return
    api.load_state_dict_from_url = functools.partial(original, weights_only=True)
    try:
        yield
    finally:
        api.load_state_dict_from_url = original


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a user's weights file, read with ``weights_only=True`` (no code in the file can run)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{path} holds Python objects beyond tensors ({first[:160]}); it is not loaded because unpickling "
            "could run code. Save the weights with torch.save(model.state_dict(), path) instead"
        ) from None
    except Exception as e:
        raise ModelLoadError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} is not a state dict (a dict of tensors, optionally under 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_torchvision(
    name: str,
    weights: str | None = None,
    *,
    num_classes: int | None = None,
    offline: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """``(model in eval mode on CPU, what its weights are)``; raises :class:`ModelLoadError` with one line."""
    import torchvision.models as tvm

    name = check_model_name(name)
    extra = {"num_classes": num_classes} if num_classes is not None else {}
    if weights is None or weights.lower() in ("none", "random"):
        torch.manual_seed(seed)
        return tvm.get_model(name, weights=None, **extra).eval(), f"random init (torchvision, seed {seed})"
    if os.path.sep in weights or Path(weights).suffix in (".pt", ".pth", ".bin", ".ckpt") or Path(weights).is_file():
        return load_torchvision_file(name, weights, num_classes=num_classes), f"weights file {weights}"
    member = resolve_weights(name, weights)
    cached = weights_cache_path(member)
    if offline and not cached.is_file():
        raise ModelLoadError(
            f"{name} weights {member} are not in torchvision's cache: looked for {cached} "
            f"(cache dir {cached.parent}, set by $TORCH_HOME); copy the file there or pass --weights FILE"
        )
    try:
        with _hub_weights_only():
            net = tvm.get_model(name, weights=member, **extra)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(
            f"{name} weights {member} could not be loaded from torchvision's cache {cached} nor downloaded "
            f"({type(e).__name__}: {first[:200]}); copy the file there or pass --weights FILE"
        ) from None
    return net.eval(), f"torchvision weights {member} ({cached})"


def load_torchvision_file(name: str, path: str | os.PathLike, *, num_classes: int | None = None) -> nn.Module:
    """torchvision's ``name`` with the tensors of a local weights file (:func:`read_state_dict`), in eval mode."""
    import torchvision.models as tvm

    name = check_model_name(name)
    state = read_state_dict(path)
    extra = {"num_classes": num_classes} if num_classes is not None else {}
    with torch.device("meta"):  # no random init: the file's tensors are assigned directly
        net = tvm.get_model(name, weights=None, **extra)
    try:
        net.load_state_dict(state, assign=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
        raise ModelLoadError(f"{path} does not fit torchvision's {name}: {detail[:300]}") from None
    return net.eval()


def named_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` of ``model`` with at least 2 filters, as (qualified module name, module), in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels >= 2]
