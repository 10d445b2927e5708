"""The phantom's truth elastogram (phantom/elastogram.py) and the manifest columns that name one."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness.errors import InputError
from liverstiffness.manifest import read_manifest
from liverstiffness.phantom.anatomy import DiseaseState, Patient, build_anatomy
from liverstiffness.phantom.elastogram import EDGE_MM, N_SLICES, SLICE_MM, reader_mean_kpa, simulate
from liverstiffness.phantom.tissues import TISSUES

FOV = (420.0, 340.0, 280.0)


def _anatomy(fibrosis: float):
    patient = Patient(sex="M", age=50.0, bmi=26.0, seed=21)
    return build_anatomy(patient, DiseaseState(fibrosis, 0.2, 4.0), 1.5, 4.0, FOV, np.random.default_rng(4))


def test_reader_mean_is_the_label_and_the_map_follows_the_local_stage():
    anat = _anatomy(3.2)           # advanced: patches and reticular bands
    e = simulate(anat, 0.2, 4.5, (0.0, 0.0, 0.0), np.random.default_rng(0))
    kpa, conf = sitk.GetArrayFromImage(e.kpa), sitk.GetArrayFromImage(e.confidence)
    assert kpa.shape[0] == N_SLICES and e.kpa.GetSpacing()[2] == SLICE_MM
    assert e.roi_mean_kpa == pytest.approx(4.5, abs=1e-4)
    assert reader_mean_kpa(kpa, conf, e.roi) == pytest.approx(4.5, abs=1e-4)
    # A reader's ROI is part of the liver: the edge, large vessels and the far left lobe are left out.
    liver = e.liver_fraction >= 0.5
    assert 0.2 < e.roi.sum() / liver.sum() < 0.85
    # The map is stiffer where the images have more fibrosis: the local stage, on the MRE grid.
    stage = sitk.GetImageFromArray(anat.stage)
    stage.SetOrigin(anat.grid.origin)
    stage.SetSpacing(anat.grid.spacing)
    stage_mre = sitk.GetArrayFromImage(sitk.Resample(sitk.SmoothingRecursiveGaussian(stage, 4.0), e.kpa))
    r = np.corrcoef(stage_mre[e.roi], np.log(kpa[e.roi]))[0, 1]
    assert r > 0.5, r
    # Heterogeneous, as fibrosis is: the ROI's voxels spread by more than the map's noise alone.
    assert np.std(np.log(kpa[e.roi])) > 0.12


def test_confidence_leaves_out_the_liver_edge():
    anat = _anatomy(1.0)
    e = simulate(anat, 0.1, 2.2, (0.0, 0.0, 0.0), np.random.default_rng(1))
    from scipy import ndimage

    liver = e.liver_fraction >= 0.5
    spacing = e.kpa.GetSpacing()[0]
    depth = np.stack([ndimage.distance_transform_edt(m) for m in liver]) * spacing
    conf = sitk.GetArrayFromImage(e.confidence) > 0
    assert conf[liver].any() and (depth[conf & liver] > EDGE_MM - spacing).all()


def test_synth_writes_elastograms_whose_reader_mean_is_the_label(small_cohort):
    manifest, records, truth = small_cohort
    for rec, row in zip(records, truth):
        assert rec.mre_map.is_file() and rec.mre_confidence.is_file()
        kpa_img = sitk.ReadImage(str(rec.mre_map))
        kpa = sitk.GetArrayFromImage(kpa_img)
        conf = sitk.GetArrayFromImage(sitk.ReadImage(str(rec.mre_confidence)))
        assert kpa.dtype == np.float32 and kpa.min() >= 0 and set(np.unique(conf)) <= {0, 1}
        # The liver as the truth labels have it, carried onto the MRE grid (its own breath-hold:
        # moved by the truth's shift), read as a reader would: the label within a few percent.
        labels = sitk.ReadImage(str(rec.mask).replace("mask.nii.gz", "truth_labels.nii.gz"))
        shift = [float(row[f"shift_mre_{ax}_mm"]) for ax in "xyz"]
        moved = sitk.TranslationTransform(3, [-v for v in shift])
        liver = sitk.GetArrayFromImage(sitk.Resample(labels == TISSUES["liver"].label, kpa_img, moved,
                                                     sitk.sitkNearestNeighbor, 0)) > 0
        assert reader_mean_kpa(kpa, conf, liver) == pytest.approx(rec.stiffness_kpa, rel=0.06)
        assert float(row["mre_roi_mean_kpa"]) == pytest.approx(rec.stiffness_kpa, abs=2e-3)


def _rewrite(src, dst, **changes):
    rows = list(csv.DictReader(open(src)))
    for k, v in changes.items():
        rows[0][k] = v
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def test_manifest_refuses_an_elastogram_without_its_confidence(small_cohort):
    manifest = small_cohort[0]
    bad = _rewrite(manifest, manifest.parent / "no_confidence.csv", mre_confidence="")
    with pytest.raises(InputError, match="mre_confidence.*is empty while mre_map is given"):
        read_manifest(bad)
    bad = _rewrite(manifest, manifest.parent / "missing_map.csv", mre_map="nowhere/mre.nii.gz")
    with pytest.raises(InputError, match="mre_map.*not found"):
        read_manifest(bad)
    # Both empty: an exam without an elastogram, as most are.
    ok = read_manifest(_rewrite(manifest, manifest.parent / "no_map.csv", mre_map="", mre_confidence=""))
    assert ok[0].mre_map is None and ok[1].mre_map is not None
