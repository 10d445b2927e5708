"""Shared fixtures: small synthetic cohorts built once per test session, and the real scans."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from liverstiffness.manifest import read_manifest
from liverstiffness.phantom import generate_cohort

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """Eight small exams from three sites; returns (manifest path, records, truth rows)."""
    out = tmp_path_factory.mktemp("cohort")
    manifest = generate_cohort(out, n=8, seed=11, sites=("A", "B", "C"), size="small", progress=False)
    truth = list(csv.DictReader(open(out / "truth.csv")))
    return manifest, read_manifest(manifest), truth


@pytest.fixture(scope="session")
def one_case(small_cohort):
    return small_cohort[1][0]


@pytest.fixture(scope="session")
def real_data():
    if not REAL.is_dir():
        pytest.fail(f"real test data not found at {REAL} (../shared/data/real beside the checkout)")
    return REAL
