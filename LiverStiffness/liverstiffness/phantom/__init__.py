"""Synthetic multiparametric liver MRI: anatomy, disease state, sequences and site/vendor effects.

``tissues`` holds the relaxation/diffusion table (with sources), ``sites`` the scanner profiles,
``anatomy`` the analytic body model, ``sequences`` the signal equations and acquisition, and
``cohort`` writes a manifest of many exams. Physics: ../shared/PHANTOM.md.
"""
from .cohort import generate_cohort
from .anatomy import DiseaseState

__all__ = ["generate_cohort", "DiseaseState"]
