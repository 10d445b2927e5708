"""Blood tests of an exam: AST, ALT (U/L) and the platelet count (10⁹/L), from the latent liver
state and the person (docs/phantom.md "Blood tests a hepatologist reads beside stiffness").

* ALT follows inflammation and fat more than fibrosis, and falls late in cirrhosis;
* AST rises modestly with fibrosis as well as with inflammation (the AST/ALT ratio rises in
  cirrhosis);
* platelets fall with portal hypertension, i.e. in advanced fibrosis (``disease.advanced``), the
  same weight that grows the spleen.

Each person has their own level of each (stable across repeat exams, drawn from the patient's
seed), each exam its own day-to-day variation, and a lab panel is sometimes not drawn: the liver
panel (AST, ALT) and the blood count (platelets) are each missing in ``MISSING_FRACTION`` of the
exams. All of it comes from random streams of its own (:data:`LAB_STREAM`), so adding the blood
tests changed nothing else a seed makes (images, labels, the other facts).

Strengths are tuned so that FIB-4 (``manifest.fib4``) separates MRE-advanced fibrosis about as
well as in NAFLD cohorts (AUROC roughly 0.7–0.8; measured: docs/phantom.md) with
the marginals of a liver-clinic cohort (median ALT about 30 U/L, AST about 25 U/L, platelets about
250 ± 60 × 10⁹/L).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .disease import DiseaseState, advanced

LAB_STREAM = 36                 # the blood tests' own random streams (any constant not used elsewhere)
MISSING_FRACTION = 0.10         # per panel: liver panel (AST, ALT), blood count (platelets)

# ln ALT (U/L): a healthy woman's median, then the effects (ours, rounded to reproduce the marginals
# and the strengths in docs/phantom.md; ALT is higher in men, with BMI and fat, and with inflammation).
ALT_BASE, ALT_MALE, ALT_PER_BMI = np.log(20.0), 0.25, 0.015
ALT_PER_INFLAMMATION, ALT_PER_PDFF, ALT_ADVANCED = 1.0, 0.012, -0.15
# ln AST (U/L)
AST_BASE, AST_MALE = np.log(19.0), 0.08
AST_PER_INFLAMMATION, AST_PER_STAGE, AST_ADVANCED, AST_PER_PDFF = 0.6, 0.10, 0.50, 0.004
# ln platelets (10⁹/L): women slightly higher, a slow fall with age, a steep one with portal hypertension.
PLT_BASE, PLT_MALE, PLT_PER_YEAR = np.log(280.0), -0.08, -0.003
PLT_PER_STAGE, PLT_ADVANCED = -0.04, -0.75
# Spread between people (ln SD; AST and ALT share a hepatocellular part) and within a person
# between visits (ln SD; platelet counts vary by more than 8 % between visits, Tosetti et al., Dig Liver Dis).
PERSON_HEPATIC_SD, ALT_OWN_SD, AST_OWN_SD, PLT_PERSON_SD = 0.25, 0.15, 0.15, 0.22
ALT_VISIT_SD, AST_VISIT_SD, PLT_VISIT_SD = 0.15, 0.10, 0.08


@dataclass(frozen=True)
class PersonLabs:
    """A person's own offsets (ln units), stable across their exams."""

    alt: float
    ast: float
    platelets: float

    @classmethod
    def sample(cls, patient_seed: int) -> PersonLabs:
        rng = np.random.default_rng([patient_seed, LAB_STREAM])
        hepatic = rng.normal(0, PERSON_HEPATIC_SD)
        return cls(alt=float(hepatic + rng.normal(0, ALT_OWN_SD)), ast=float(0.6 * hepatic + rng.normal(0, AST_OWN_SD)),
                   platelets=float(rng.normal(0, PLT_PERSON_SD)))


def expected_labs(state: DiseaseState, age: float, sex: str | None, bmi: float) -> tuple[float, float, float]:
    """ln AST, ln ALT, ln platelets of a typical person in this state (before person and visit spread)."""
    f, a, i, male = state.fibrosis, advanced(state.fibrosis), state.inflammation, float(sex == "M")
    ln_alt = (ALT_BASE + ALT_MALE * male + ALT_PER_BMI * (bmi - 28.0) + ALT_PER_INFLAMMATION * i
              + ALT_PER_PDFF * state.pdff + ALT_ADVANCED * a)
    ln_ast = (AST_BASE + AST_MALE * male + AST_PER_INFLAMMATION * i + AST_PER_STAGE * f + AST_ADVANCED * a
              + AST_PER_PDFF * state.pdff)
    ln_plt = PLT_BASE + PLT_MALE * male + PLT_PER_YEAR * (age - 50.0) + PLT_PER_STAGE * f + PLT_ADVANCED * a
    return ln_ast, ln_alt, ln_plt


def draw_labs(state: DiseaseState, age: float, sex: str | None, bmi: float, patient_seed: int,
              cohort_seed: int, exam_index: int) -> tuple[float | None, float | None, float | None]:
    """AST (U/L), ALT (U/L) and platelets (10⁹/L) of one exam, rounded as a laboratory reports
    them; None for a panel that was not drawn. Deterministic per patient, cohort seed and exam."""
    person = PersonLabs.sample(patient_seed)
    rng = np.random.default_rng([cohort_seed, exam_index, LAB_STREAM])
    ln_ast, ln_alt, ln_plt = expected_labs(state, age, sex, bmi)
    ast = float(np.exp(ln_ast + person.ast + rng.normal(0, AST_VISIT_SD)))
    alt = float(np.exp(ln_alt + person.alt + rng.normal(0, ALT_VISIT_SD)))
    plt = float(np.exp(ln_plt + person.platelets + rng.normal(0, PLT_VISIT_SD)))
    liver_panel, blood_count = rng.random() >= MISSING_FRACTION, rng.random() >= MISSING_FRACTION
    return (float(max(round(ast), 5)) if liver_panel else None, float(max(round(alt), 4)) if liver_panel else None,
            float(max(round(plt), 10)) if blood_count else None)
