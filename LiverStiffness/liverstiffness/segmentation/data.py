"""Training cases for the liver segmentation model, on the network grid.

Two sources: a folder of ``image_N.nii.gz`` / ``label_N.nii.gz`` pairs with a liver label value
(the 15 CHAOS T2-SPIR cases of Q-Net's preprocessed copy: 1 liver, 2/3 kidneys, 4 spleen),
and a cohort manifest (``liverstiffness synth`` exams), whose liver mask lies on the T1w grid
and is carried onto the T2w by the pipeline's own T2w → T1w registration (the phantom, like a
patient, breathes differently between sequences).

A synthetic exam's anatomy is a deformed CHAOS case (the phantom's ``template``, in the cohort's
truth.csv): its ``group`` names that case, so cross-validation keeps the two in one fold and a
held-out CHAOS case is never seen through a phantom built from it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import spatial
from ..errors import InputError
from .config import SegInputSpec
from .grid import labels_to_network, to_network

PAIR = re.compile(r"^image_(\w+)\.(nii\.gz|nii|nrrd|mha)$")


@dataclass
class SegCase:
    case_id: str
    source: str                      # "real" or "synthetic"
    image_path: Path
    label_path: Path | None          # None: ``label`` was made from a manifest exam
    label_value: int | None
    image: np.ndarray                # [z, y, x] float32 on the network grid, normalised
    label: np.ndarray                # [z, y, x] uint8 0/1 on the network grid
    kept: tuple | None = None        # (image, label) on the image's own grid when not re-readable
    # [z, y, x] uint8 on the network grid: 0 unlabelled, 1, 2, … one index per labelled organ (the
    # liver and e.g. kidneys and spleen), for the organ-wise intensity augmentation; None: liver only.
    organs: np.ndarray | None = None
    group: str = ""                  # cases of one group share a fold (default: the case itself)
    # the indices in ``organs`` of the organs other than the liver (targets of the auxiliary outputs)
    other_organs: tuple[int, ...] = field(init=False, default=())

    def __post_init__(self):
        self.group = self.group or self.case_id
        if self.organs is not None:
            # the liver's index is the one its label mostly covers (the two grids' edges differ by a voxel)
            under_liver = self.organs[(self.label > 0) & (self.organs > 0)]
            liver = int(np.bincount(under_liver).argmax()) if under_liver.size else 0
            self.other_organs = tuple(int(o) for o in np.unique(self.organs) if o not in (0, liver))

    def originals(self) -> tuple[sitk.Image, sitk.Image]:
        """The image and its liver label on the image's own grid (where held-out scores are taken)."""
        if self.kept is not None:
            return self.kept
        return sitk.ReadImage(str(self.image_path), sitk.sitkFloat32), read_label(self.label_path, self.label_value)


def find_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) for every ``image_N``/``label_N`` pair in ``folder``, in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--data {folder}", "is not a folder")
    pairs = []
    for img in sorted(folder.iterdir()):
        m = PAIR.match(img.name)
        if not m:
            continue
        label = folder / f"label_{m.group(1)}.{m.group(2)}"
        if label.is_file():
            pairs.append((f"{folder.name}_{m.group(1)}", img, label))
    if not pairs:
        raise InputError(f"--data {folder}", "holds no image_N / label_N pairs")
    return sorted(pairs, key=lambda p: (len(p[0]), p[0]))


def read_label(path: Path, value: int | None) -> sitk.Image:
    """The liver (``value``, or any non-zero when None) of a labelmap file as a 0/1 image."""
    return liver_of(sitk.ReadImage(str(path)), value)


def liver_of(lab: sitk.Image, value: int | None) -> sitk.Image:
    """The liver (``value``, or any non-zero when None) of a labelmap as a 0/1 image."""
    arr = sitk.GetArrayFromImage(lab)
    out = sitk.GetImageFromArray(((np.rint(arr) == value) if value is not None else (arr != 0)).astype(np.uint8))
    out.CopyInformation(lab)
    return out


def organs_to_network(lab: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Every labelled structure of a labelmap on the network grid (nearest), renumbered 1, 2, …"""
    arr = np.rint(sitk.GetArrayFromImage(lab)).astype(np.int64)
    index = np.zeros(arr.shape, np.uint8)
    for i, value in enumerate(v for v in np.unique(arr) if v != 0):
        index[arr == value] = min(i + 1, 255)
    renumbered = sitk.GetImageFromArray(index)
    renumbered.CopyInformation(lab)
    on_grid = spatial.resample_like(renumbered, grid, interpolation="nearest", pixel=sitk.sitkUInt8)
    return sitk.GetArrayFromImage(on_grid)


def load_pairs(folder: str | Path, label_value: int | None, spec: SegInputSpec) -> list[SegCase]:
    cases = []
    for case_id, img_path, lab_path in find_pairs(folder):
        img = sitk.ReadImage(str(img_path), sitk.sitkFloat32)
        x, grid = to_network(img, spec)
        lab = sitk.ReadImage(str(lab_path))
        cases.append(SegCase(case_id, "real", img_path, lab_path, label_value, x,
                             labels_to_network(liver_of(lab, label_value), grid), organs=organs_to_network(lab, grid)))
    return cases


def t2w_liver_from_exam(rec) -> tuple[sitk.Image, sitk.Image]:
    """A manifest exam's T2w and its liver mask carried from the T1w grid onto the T2w grid."""
    from ..preprocess import read_exam, register_to_reference

    images = read_exam(rec.t1w, rec.t2w, rec.dwi, rec.mask, rec.dwi_b)
    to_t2 = register_to_reference(images)["t2w"].transform   # T1w points → T2w points
    mask = spatial.resample_like(images.mask, images.t2w, to_t2.GetInverse(), interpolation="nearest",
                                 pixel=sitk.sitkUInt8)
    return images.t2w, mask


def anatomy_templates(manifest: str | Path) -> dict[str, str]:
    """Case id → the CHAOS case its anatomy was built from (``chaos_t2spir_N``), from the truth.csv
    that ``liverstiffness synth`` writes beside the manifest; empty when there is none."""
    import csv

    truth = Path(manifest).parent / "truth.csv"
    if not truth.is_file():
        return {}
    with open(truth, newline="") as fh:
        return {r["case_id"]: f"chaos_t2spir_{int(float(r['template']))}" for r in csv.DictReader(fh)
                if r.get("template") not in (None, "")}


def load_manifest(manifest: str | Path, spec: SegInputSpec) -> list[SegCase]:
    from ..manifest import read_manifest

    templates = anatomy_templates(manifest)
    cases = []
    for rec in read_manifest(manifest):
        if rec.mask is None:
            continue
        t2w, mask = t2w_liver_from_exam(rec)
        x, grid = to_network(t2w, spec)
        cases.append(SegCase(f"synthetic_{rec.case_id}", "synthetic", Path(rec.t2w), None, None, x,
                             labels_to_network(mask, grid), kept=(t2w, mask), group=templates.get(rec.case_id, "")))
    return cases
