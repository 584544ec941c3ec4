"""crelu-repro: reference experiment suite for Shang et al. (ICML 2016).

*Understanding and Improving Convolutional Neural Networks via Concatenated Rectified Linear Units*
(Shang, Sohn, Almeida, Lee; PMLR 48:2217-2225).

Package map
-----------
``crelu.nn``         activations (ReLU, CReLU, AVR) behind one registry
``crelu.models``     ConvPool-CNN-C, VGG-BN-dropout, All-CNN-B, built from config
``crelu.data``       CIFAR (device-resident tensors), ImageNet (ImageFolder), generated data
``crelu.training``   ``train(cfg) -> RunResult``, optimiser/schedule, checkpoints
``crelu.config``     structured-config schemas registered with Hydra
``crelu.results``    run records (``run.json``), atomic I/O, run keys
``crelu.protocols``  Single / 10-fold Average / Vote
``crelu.tables``     regenerate the paper's tables from run records
``crelu.analysis``   pairing filters, invariance, reconstruction, Table 6
"""

__version__ = "0.1.0"
