"""Flywheel serving: BentoML, Open Inference Protocol v2, hot swap, shadow/canary, prediction log.

Importing the package sets process defaults that must be in place before bentoml and numpy
load (each ``setdefault``, so the environment still wins).
"""

import os

# No usage tracking: nothing leaves the machine.
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# One BLAS/OpenMP thread per worker process: the worker processes already fill the cores
# and each runs its batches on a single model thread, so more BLAS threads would only
# compete with the other workers for the same cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
