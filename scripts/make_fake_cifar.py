#!/usr/bin/env python
"""Write generated CIFAR-10 and CIFAR-100 copies in the official layout (for smoke runs and tests).

    python scripts/make_fake_cifar.py --out data/generated [--train 600 --test 200]

The images are synthetic (class-dependent colours and stripes): they exercise every code path, including
torchvision's real dataset classes, but say nothing about the paper's numbers.
"""

from __future__ import annotations

import argparse

from crelu.data.synthetic import write_fake_cifar


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/generated")
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--datasets", nargs="+", default=["cifar10", "cifar100"])
    a = p.parse_args()
    for i, name in enumerate(a.datasets):
        root = write_fake_cifar(a.out, name, n_train=a.train, n_test=a.test, seed=i)
        print(f"wrote generated {name} ({a.train} train / {a.test} test) under {root}")


if __name__ == "__main__":
    main()
