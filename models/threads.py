"""One thread per model library in a serving process.

Workers are a pool of processes, each serving one prediction at a time; libraries that
also start a thread per core in every process only oversubscribe the CPU. The thread
pools of OpenMP/MKL/OpenBLAS are sized when the library loads, hence the environment
variables must be set before torch, xgboost or lightgbm are imported.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads() -> None:
    for variable in _VARIABLES:
        os.environ.setdefault(variable, "1")
    torch = sys.modules.get("torch")
    if torch is None:
        return  # never import torch here: a process that serves no LSTM must not load it
    torch.set_num_threads(1)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # set before, or parallel work already started: too late
            log.debug("torch inter-op threads left at %d", torch.get_num_interop_threads())
