"""Datasets: CIFAR-10/100 as device-resident tensors, ImageNet through ImageFolder, generated data for tests."""

from crelu.data.cifar import DataNotFoundError, ModifiedDatasetWarning, load_cifar
from crelu.data.module import DataBundle, build_data
from crelu.data.synthetic import write_fake_cifar
from crelu.data.tensor_loader import TensorBatches

__all__ = [
    "DataBundle",
    "DataNotFoundError",
    "ModifiedDatasetWarning",
    "TensorBatches",
    "build_data",
    "load_cifar",
    "write_fake_cifar",
]
