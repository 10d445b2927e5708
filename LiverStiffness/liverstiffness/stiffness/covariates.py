"""Clinical covariates as model inputs: a value and a "known" flag per covariate.

Unknown values take the model's learned missing-value embedding, so PDFF (often not measured),
the blood tests, or any other fact, can be left out at prediction time.

The list only grows at its end (:data:`ALL_COVARIATES`): a model's covariates are always the first
``n_covariates`` of it (``ModelConfig.covariates``; a model folder written before the blood tests
has the original four, :data:`COVARIATES`), so an encoding of all of them serves every model —
the network reads the columns it was trained with and ignores the rest.
"""
from __future__ import annotations

import math

import numpy as np

from ..manifest import PatientFacts

#: The original four: what a model folder that names no covariate list was trained with.
COVARIATES = ("age", "sex", "bmi", "pdff")
COVARIATES_V1 = COVARIATES
#: Blood tests a hepatologist reads beside stiffness (AST, ALT in U/L, platelets in 10⁹/L) and
#: FIB-4 computed from them with the age (``manifest.fib4``).
LAB_COVARIATES = ("ast", "alt", "platelets", "fib4")
#: Every covariate this version knows, in the order of the model's covariate tokens.
ALL_COVARIATES = COVARIATES_V1 + LAB_COVARIATES
# Centre and scale (our choice) to keep each value near [-1, 1].
_SCALING = {"age": (50.0, 20.0), "bmi": (28.0, 7.0), "pdff": (5.0, 10.0)}
# The blood tests are right-skewed: centre and scale of their natural log (ours: AST 25 U/L,
# ALT 30 U/L, FIB-4 1.3 at the centre; platelets as they are).
_LOG_SCALING = {"ast": (math.log(25.0), 0.5), "alt": (math.log(30.0), 0.6), "fib4": (math.log(1.3), 0.7)}
_LAB_SCALING = {"platelets": (250.0, 80.0)}


def model_covariates(n_covariates: int) -> tuple[str, ...]:
    """The covariates of a model with ``n_covariates`` tokens (the first of ALL_COVARIATES)."""
    if not 0 <= n_covariates <= len(ALL_COVARIATES):
        raise ValueError(f"{n_covariates} covariates: this version knows {len(ALL_COVARIATES)} "
                         f"({', '.join(ALL_COVARIATES)})")
    return ALL_COVARIATES[:n_covariates]


def _scaled(name: str, v) -> float:
    if name == "sex":
        return 1.0 if v == "M" else -1.0
    if name in _LOG_SCALING:
        centre, scale = _LOG_SCALING[name]
        return (math.log(max(float(v), 1e-3)) - centre) / scale
    centre, scale = {**_SCALING, **_LAB_SCALING}[name]
    return (float(v) - centre) / scale


def encode(facts: PatientFacts, names: tuple[str, ...] = ALL_COVARIATES) -> tuple[np.ndarray, np.ndarray]:
    """→ (values [K] float32, known [K] bool) in the order of ``names`` (default: every covariate
    this version knows; a model reads its first ``n_covariates``). Pass a model's own list,
    ``meta.config.covariates``, for exactly the columns it was trained with."""
    values = np.zeros(len(names), np.float32)
    known = np.zeros(len(names), bool)
    for i, name in enumerate(names):
        v = getattr(facts, name)
        if v is None:
            continue
        values[i] = _scaled(name, v)
        known[i] = True
    return values, known
