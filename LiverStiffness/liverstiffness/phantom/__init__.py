"""Synthetic multiparametric liver MRI: real anatomy, disease, sequences and site/vendor effects.

``atlas`` holds anatomy templates derived from 15 real MRI scans (CHAOS, CC BY-SA 4.0),
``deform`` turns a template into a patient, ``disease`` the latent liver state and person-level
biology, ``anatomy`` assembles one exam's tissue maps, ``tissues`` the relaxation/diffusion table
(with sources), ``sites`` the scanner profiles, ``sequences`` the signal equations and
acquisition, ``annotator`` the drawn liver mask, and ``cohort`` writes a manifest of many exams.
Physics: docs/phantom.md; calibration: experiments/phantom_calibration.py.
"""
from .anatomy import DiseaseState
from .cohort import generate_cohort

__all__ = ["DiseaseState", "generate_cohort"]
