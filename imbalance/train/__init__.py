"""The training pipeline: a typed configuration, ``fit``, and the ``python -m imbalance.train``
command line.

::

    from imbalance.train import fit, load_config

    result = fit(load_config("configs/retinanet_focal_cpu.yaml", ["optim.iterations=200"]),
                 out="runs/focal")
    result.ap["AP50"], result.metrics[-1], result.final["images_per_s"]

The same from a shell (several GPUs: ``torchrun --nproc_per_node N -m imbalance.train ...``)::

    python -m imbalance.train --config configs/retinanet_focal_cpu.yaml --out runs/focal \\
        optim.iterations=200

See :mod:`imbalance.train.config` for the settings and presets, :mod:`imbalance.train.loop` for
what a run does and writes.
"""

from imbalance.train.config import (
    PRESETS,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    validate,
)
from imbalance.train.loop import FitResult, NonFiniteLossError, fit
from imbalance.train.rundir import RunLockedError

__all__ = [
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "FitResult",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "RunConfig",
    "RunLockedError",
    "TrainConfig",
    "apply_overrides",
    "fit",
    "load_config",
    "validate",
]
