"""Clinical covariates as model inputs: a value and a "known" flag per covariate.

Unknown values take the model's learned missing-value embedding, so PDFF (often not measured),
or any other fact, can be left out at prediction time.
"""
from __future__ import annotations

import numpy as np

from ..manifest import PatientFacts

COVARIATES = ("age", "sex", "bmi", "pdff")
# Centre and scale (our choice) to keep each value near [-1, 1].
_SCALING = {"age": (50.0, 20.0), "bmi": (28.0, 7.0), "pdff": (5.0, 10.0)}


def encode(facts: PatientFacts) -> tuple[np.ndarray, np.ndarray]:
    """→ (values [4] float32, known [4] bool) in the order of COVARIATES."""
    values = np.zeros(len(COVARIATES), np.float32)
    known = np.zeros(len(COVARIATES), bool)
    for i, name in enumerate(COVARIATES):
        v = getattr(facts, name)
        if v is None:
            continue
        if name == "sex":
            values[i] = 1.0 if v == "M" else -1.0
        else:
            centre, scale = _SCALING[name]
            values[i] = (float(v) - centre) / scale
        known[i] = True
    return values, known
