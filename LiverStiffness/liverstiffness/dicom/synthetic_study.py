"""A synthetic exam (the phantom's NIfTI files and manifest row) written as a DICOM study.

Each exam becomes one study of classic single-frame MR images with the header conventions of its
vendor, so that series selection meets the layouts it will meet in hospitals:

- Siemens: ``localizer``; ``t2_haste_tra_mbh`` and a fat-suppressed ``t2_haste_fs_tra_mbh``;
  at 1.5 T one dual-echo ``t1_fl2d_opp-in_tra_bh`` series, at 3 T a Dixon VIBE written as
  separate ``_opp``, ``_in``, ``_W``, ``_F`` series; ``ep2d_diff`` with the b-value only in the
  private tag (0019,100C) (as the real Siemens series in the tests), its ``_ADC`` map; a
  post-contrast ``t1_vibe_fs_tra_bh_portal``. Files flat, ``MR.<series>.<instance>.dcm``.
- GE: ``3-Plane Loc`` (one slice in each plane); ``Ax SSFSE``; at 1.5 T ``Ax DUAL ECHO`` (both echoes
  in one series), at 3 T ``Ax LAVA-Flex`` as InPhase/OutPhase/WATER/FAT series; ``Ax DWI`` with the
  b-value in (0043,1039) (plus 1e9, as some versions write it; at 3 T also (0018,9087));
  ``Apparent Diffusion Coefficient (mm2/s)``; ``Ax LAVA Portal`` with no contrast agent in the
  header. Files in ``Ser<n>/IM<k>`` with no extension.
- Philips: ``Survey``; ``T2W_SPAIR`` then ``T2W_TSE``; ``T1W_FFE_IP_OP`` (two echoes);
  ``DWI_b0_<b>`` with the b-value in (2001,1003) and a spin-echo ScanningSequence; ``dADC_DWI``;
  ``T1W_THRIVE_portal``. Files in ``DICOM/IM_<k>`` with no extension, and a README that is not DICOM.

Image content: the phantom's T1w (the in-phase echo), T2w and DWI. The opposed-phase, fat, water,
fat-suppressed and post-contrast images are stand-ins (the T1w or T2w scaled, on the same
stored-value scale as the real one) that only need to look different; the ADC is fitted from the
DWI. Values are stored as unsigned 16-bit integers (about 3000 at the 99.9th percentile of the
T1w/T2w/DWI; ADC in 10⁻⁶ mm²/s). The liver mask is added as a DICOM SEG on the T1w in-phase images.
UIDs are derived from the case id, so the same exam always gives the same study.
"""
from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imageio import fit_adc_map

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
FULL_SCALE = 3000.0          # stored value at the 99.9th percentile of a sequence
# Chemical shift of fat vs water, cycles per ms per tesla (3.4 ppm × 42.577 MHz/T).
_CYCLES_PER_MS_PER_T = 3.4e-6 * 42.577e6 / 1000.0


def in_phase_te_ms(field_t: float) -> float:
    return round(1.0 / (_CYCLES_PER_MS_PER_T * field_t), 2)


def opposed_phase_te_ms(field_t: float) -> float:
    return round(0.5 / (_CYCLES_PER_MS_PER_T * field_t), 2)


@dataclass
class SeriesPlan:
    """One series to write: what it shows and how its header describes it."""

    description: str
    content: str                       # t1w, t1w_opp, t1w_fat, t1w_water, t1w_post, t2w, t2w_fs, dwi, adc, localizer
    scanning_sequence: str
    sequence_variant: str
    te_ms: tuple[float, ...]           # one per echo (a dual-echo series has two)
    tr_ms: float
    flip_deg: float
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "NORM")
    scan_options: str = ""
    contrast_agent: str = ""
    b_tags: tuple[str, ...] = ()       # which b-value tags to write: "standard", "siemens", "ge", "philips"
    extra: dict = field(default_factory=dict)


def _siemens(field_t: float) -> list[SeriesPlan]:
    ip, op = in_phase_te_ms(field_t), opposed_phase_te_ms(field_t)
    plans = [SeriesPlan("localizer", "localizer", "GR", "SP", (4.0,), 8.6, 20, ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
             SeriesPlan("t2_haste_tra_mbh", "t2w", "SE", "SK\\SP", (90.0,), 1400.0, 150),
             SeriesPlan("t2_haste_fs_tra_mbh", "t2w_fs", "SE", "SK\\SP", (90.0,), 1400.0, 150, scan_options="FS")]
    if field_t < 2.25:
        plans.append(SeriesPlan("t1_fl2d_opp-in_tra_bh", "t1w", "GR", "SP", (op, ip), 150.0, 70))
    else:
        dixon = ("DERIVED", "PRIMARY", "DIXON")
        plans += [SeriesPlan("t1_vibe_dixon_tra_bh_opp", "t1w_opp", "GR", "SP\\OSP", (op,), 4.0, 9, dixon + ("OUT_PHASE",)),
                  SeriesPlan("t1_vibe_dixon_tra_bh_in", "t1w", "GR", "SP\\OSP", (ip,), 4.0, 9, dixon + ("IN_PHASE",)),
                  SeriesPlan("t1_vibe_dixon_tra_bh_W", "t1w_water", "GR", "SP\\OSP", (ip,), 4.0, 9, dixon + ("WATER",)),
                  SeriesPlan("t1_vibe_dixon_tra_bh_F", "t1w_fat", "GR", "SP\\OSP", (ip,), 4.0, 9, dixon + ("FAT",))]
    plans += [SeriesPlan("ep2d_diff_tra_p2", "dwi", "EP", "SK\\SP", (60.0,), 3000.0, 90,
                         ("DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"), scan_options="FS", b_tags=("siemens",)),
              SeriesPlan("ep2d_diff_tra_p2_ADC", "adc", "EP", "SK\\SP", (60.0,), 3000.0, 90,
                         ("DERIVED", "PRIMARY", "DIFFUSION", "ADC"), b_tags=("siemens",)),
              SeriesPlan("t1_vibe_fs_tra_bh_portal", "t1w_post", "GR", "SP\\OSP", (ip,), 4.0, 9, scan_options="FS",
                         contrast_agent="Gadobutrol")]
    return plans


def _ge(field_t: float) -> list[SeriesPlan]:
    ip, op = in_phase_te_ms(field_t), opposed_phase_te_ms(field_t)
    plans = [SeriesPlan("3-Plane Loc", "localizer", "GR", "SS", (1.6,), 5.0, 30, ("ORIGINAL", "PRIMARY", "LOCALIZER")),
             SeriesPlan("Ax SSFSE", "t2w", "SE", "SK", (90.0,), 1500.0, 90, ("ORIGINAL", "PRIMARY", "OTHER"))]
    if field_t < 2.25:
        plans.append(SeriesPlan("Ax DUAL ECHO", "t1w", "GR", "SP", (op, ip), 150.0, 70, ("ORIGINAL", "PRIMARY", "OTHER")))
    else:
        flex = ("DERIVED", "PRIMARY")
        plans += [SeriesPlan("Ax LAVA-Flex InPhase", "t1w", "GR", "SS\\SP", (ip,), 4.0, 12, flex + ("IN_PHASE",)),
                  SeriesPlan("Ax LAVA-Flex OutPhase", "t1w_opp", "GR", "SS\\SP", (op,), 4.0, 12, flex + ("OUT_PHASE",)),
                  SeriesPlan("Ax LAVA-Flex WATER", "t1w_water", "GR", "SS\\SP", (ip,), 4.0, 12, flex + ("WATER",)),
                  SeriesPlan("Ax LAVA-Flex FAT", "t1w_fat", "GR", "SS\\SP", (ip,), 4.0, 12, flex + ("FAT",))]
    b_tags = ("ge",) if field_t < 2.25 else ("ge", "standard")
    plans += [SeriesPlan("Ax DWI", "dwi", "EP\\SE", "SS", (60.0,), 3000.0, 90, ("ORIGINAL", "PRIMARY", "OTHER"),
                         scan_options="FS", b_tags=b_tags),
              SeriesPlan("Apparent Diffusion Coefficient (mm2/s)", "adc", "EP\\SE", "SS", (60.0,), 3000.0, 90,
                         ("DERIVED", "SECONDARY", "OTHER")),
              SeriesPlan("Ax LAVA Portal", "t1w_post", "GR", "SS\\SP", (ip,), 4.0, 12, ("ORIGINAL", "PRIMARY", "OTHER"))]
    return plans


def _philips(field_t: float) -> list[SeriesPlan]:
    ip, op = in_phase_te_ms(field_t), opposed_phase_te_ms(field_t)
    return [SeriesPlan("Survey", "localizer", "GR", "SS", (2.3,), 5.0, 15, ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
            SeriesPlan("T2W_SPAIR", "t2w_fs", "SE", "SK", (80.0,), 1200.0, 90, ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
                       scan_options="FS"),
            SeriesPlan("T2W_TSE", "t2w", "SE", "SK", (80.0,), 1200.0, 90, ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")),
            SeriesPlan("T1W_FFE_IP_OP", "t1w", "GR", "SP", (op, ip), 150.0, 70, ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
            SeriesPlan("DWI_b0_{b}", "dwi", "SE", "SK", (60.0,), 3000.0, 90, ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
                       scan_options="FS", b_tags=("philips",)),
            SeriesPlan("dADC_DWI", "adc", "SE", "SK", (60.0,), 3000.0, 90, ("DERIVED", "PRIMARY", "ADC_UNSPECIFIED")),
            SeriesPlan("T1W_THRIVE_portal", "t1w_post", "GR", "SP", (ip,), 4.0, 10, ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
                       contrast_agent="Gadoterate")]


VENDORS = {"Siemens": ("SIEMENS", _siemens, {1.5: "MAGNETOM Aera", 3.0: "MAGNETOM Skyra"}),
           "GE": ("GE MEDICAL SYSTEMS", _ge, {1.5: "SIGNA Artist", 3.0: "DISCOVERY MR750"}),
           "Philips": ("Philips Medical Systems", _philips, {1.5: "Ingenia", 3.0: "Ingenia Elition X"})}


def study_plan(vendor: str, field_t: float) -> list[SeriesPlan]:
    """The series a vendor's scanner writes for this liver protocol (unknown vendor: Siemens)."""
    return VENDORS.get(vendor, VENDORS["Siemens"])[1](field_t)


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


class _Writer:
    """Writes the files of one study, named and foldered the vendor's way."""

    def __init__(self, out: Path, vendor: str):
        self.out, self.vendor, self.count = out, vendor, 0
        out.mkdir(parents=True, exist_ok=True)
        if vendor == "Philips":
            (out / "DICOM").mkdir(exist_ok=True)
            (out / "README.txt").write_text("Exported from a synthetic Philips scanner. Not DICOM.\n")

    def path(self, series_number: int, instance: int) -> Path:
        self.count += 1
        if self.vendor == "GE":
            folder = self.out / f"Ser{series_number}"
            folder.mkdir(exist_ok=True)
            return folder / f"IM{instance}"
        if self.vendor == "Philips":
            return self.out / "DICOM" / f"IM_{self.count:05d}"
        return self.out / f"MR.{series_number}.{instance}.dcm"


def _study_datasets(rec, vendor_name: str, model: str, field_t: float, exam_date: datetime.date):
    """Patient, study and equipment attributes shared by every file of the study."""
    from pydicom.dataset import Dataset

    base = Dataset()
    height = 1.76 if rec.facts.sex == "M" else 1.63
    base.PatientName = f"SYNTH^{rec.patient_id}"
    base.PatientID = rec.patient_id
    base.PatientBirthDate = ""
    base.PatientSex = rec.facts.sex or "O"
    if rec.facts.age is not None:
        base.PatientAge = f"{int(rec.facts.age):03d}Y"
    if rec.facts.bmi is not None:
        base.PatientSize = f"{height:.2f}"
        base.PatientWeight = f"{rec.facts.bmi * height ** 2:.1f}"
    base.StudyInstanceUID = _uid(rec.case_id, "study")
    base.StudyDate = base.SeriesDate = base.ContentDate = exam_date.strftime("%Y%m%d")
    base.StudyTime = base.SeriesTime = base.ContentTime = "090000"
    base.AccessionNumber = rec.case_id.replace("-", "")[:16]
    base.ReferringPhysicianName = ""
    base.StudyID = rec.case_id[:16]
    base.StudyDescription = "MR ABDOMEN LIVER (synthetic)"
    base.Modality = "MR"
    base.Manufacturer = vendor_name
    base.ManufacturerModelName = model
    base.InstitutionName = f"Synthetic site {rec.site}"
    base.MagneticFieldStrength = f"{field_t:g}"
    base.ImagedNucleus = "1H"
    base.FrameOfReferenceUID = _uid(rec.case_id, "frame of reference")
    base.PositionReferenceIndicator = ""
    base.PatientPosition = "FFS"
    base.BodyPartExamined = "ABDOMEN"
    return base


def _slice_datasets(img: sitk.Image) -> list[dict]:
    """Geometry of each slice of ``img`` (LPS): position, orientation, spacing."""
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    sp = img.GetSpacing()
    iop = [float(v) for v in (*d[:, 0], *d[:, 1])]
    out = []
    for k in range(img.GetSize()[2]):
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        out.append({"ImagePositionPatient": [f"{v:.4f}" for v in pos], "ImageOrientationPatient": [f"{v:.6f}" for v in iop],
                    "PixelSpacing": [f"{sp[1]:.4f}", f"{sp[0]:.4f}"], "SliceThickness": f"{sp[2]:g}",
                    "SliceLocation": f"{float(np.dot(d[:, 2], pos)):.4f}"})
    return out


def _to_uint16(arr: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(arr * scale), 0, 65535).astype(np.uint16)


def _scale(arr: np.ndarray) -> float:
    top = float(np.percentile(arr, 99.9))
    return FULL_SCALE / top if top > 0 else 1.0


def _write_image(path: Path, base, plan: SeriesPlan, series_uid: str, series_number: int, instance: int,
                 geometry: dict, pixels: np.ndarray, te_ms: float, echo_number: int, b_value: float | None, rec) -> object:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = copy.deepcopy(base)
    sop_uid = _uid(rec.case_id, series_number, instance)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, instance
    ds.SeriesDescription = ds.ProtocolName = plan.description
    ds.ImageType = list(plan.image_type)
    ds.ScanningSequence, ds.SequenceVariant = plan.scanning_sequence.split("\\"), plan.sequence_variant.split("\\")
    ds.ScanOptions = plan.scan_options.split("\\") if plan.scan_options else ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime, ds.EchoNumbers, ds.RepetitionTime = f"{te_ms:g}", echo_number, f"{plan.tr_ms:g}"
    ds.FlipAngle = f"{plan.flip_deg:g}"
    ds.EchoTrainLength = 1
    if plan.contrast_agent:
        ds.ContrastBolusAgent = plan.contrast_agent
    for key, value in geometry.items():
        setattr(ds, key, value)
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if b_value is not None:
        _write_b_value(ds, plan.b_tags, b_value)
    ds.save_as(str(path), enforce_file_format=True)
    return ds


def _write_b_value(ds, tags, b: float) -> None:
    if "standard" in tags:
        ds.DiffusionBValue = float(b)
    if "siemens" in tags:
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", str(int(b)))
    if "ge" in tags:
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [str(int(b) + 1000000000), "8", "0", "0"])
    if "philips" in tags:
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b))


def write_exam_study(rec, out: str | Path, exam_index: int = 0, with_seg: bool = True) -> Path:
    """Write the exam of manifest record ``rec`` (its NIfTI files) as a DICOM study under ``out``."""
    out = Path(out)
    field_t = float(rec.field_strength or 1.5)
    vendor = rec.vendor if rec.vendor in VENDORS else "Siemens"
    vendor_name, _, models = VENDORS[vendor]
    model = models[min(models, key=lambda f: abs(f - field_t))]
    base = _study_datasets(rec, vendor_name, model, field_t, datetime.date(2026, 1, 1) + datetime.timedelta(days=exam_index))
    t1, t2 = sitk.ReadImage(str(rec.t1w), sitk.sitkFloat32), sitk.ReadImage(str(rec.t2w), sitk.sitkFloat32)
    dwi4 = sitk.ReadImage(str(rec.dwi), sitk.sitkFloat32)
    dwi = [dwi4[:, :, :, k] for k in range(dwi4.GetSize()[3])] if dwi4.GetDimension() == 4 else [dwi4]
    b_values = list(rec.dwi_b)
    a1, a2 = sitk.GetArrayFromImage(t1), sitk.GetArrayFromImage(t2)
    ad = [sitk.GetArrayFromImage(d) for d in dwi]
    s1, s2, sd = _scale(a1), _scale(a2), _scale(ad[0])
    adc = sitk.GetArrayFromImage(fit_adc_map(dwi, b_values)) if len(dwi) > 1 else None
    # What each kind of series shows, on which grid, in stored values (the stand-ins: see module docstring).
    content = {"t1w": (t1, [_to_uint16(a1, s1)]), "t1w_opp": (t1, [_to_uint16(a1 * 0.75, s1)]),
               "t1w_water": (t1, [_to_uint16(a1 * 0.7, s1)]), "t1w_fat": (t1, [_to_uint16(a1 * 0.3, s1)]),
               "t1w_post": (t1, [_to_uint16(a1 * 1.4, s1)]), "t2w": (t2, [_to_uint16(a2, s2)]),
               "t2w_fs": (t2, [_to_uint16(a2 * 0.6, s2)]), "dwi": (dwi[0], [_to_uint16(a, sd) for a in ad])}
    if adc is not None:
        content["adc"] = (dwi[0], [_to_uint16(adc, 1000.0)])
    writer = _Writer(out, vendor)
    in_phase_datasets = []
    number = 0
    for plan in study_plan(vendor, field_t):
        if plan.content not in content and plan.content != "localizer":
            continue
        number += 1
        series_number = 100 * number if vendor == "Philips" else number
        series_uid = _uid(rec.case_id, "series", series_number)
        if "{b}" in plan.description:
            plan = SeriesPlan(**{**plan.__dict__, "description": plan.description.format(b=int(max(b_values)))})
        if plan.content == "localizer":
            _write_localizer(writer, base, plan, series_uid, series_number, t2, rec)
            continue
        grid, volumes = content[plan.content]
        geometry = _slice_datasets(grid)
        instance = 0
        echoes = plan.te_ms if plan.content == "t1w" and len(plan.te_ms) > 1 else (plan.te_ms[0],)
        for e, te in enumerate(echoes, start=1):
            in_phase = len(echoes) == 1 or e == len(echoes)     # dual-echo series: opposed first, in-phase second
            for v, vol in enumerate(volumes):
                if plan.content == "t1w" and not in_phase:
                    vol = _to_uint16(a1 * 0.75, s1)
                b = b_values[v] if plan.content == "dwi" else (max(b_values) if plan.content == "adc" else None)
                for k in range(vol.shape[0]):
                    instance += 1
                    ds = _write_image(writer.path(series_number, instance), base, plan, series_uid, series_number, instance,
                                      geometry[k], vol[k], te, e, b, rec)
                    if plan.content == "t1w" and in_phase:
                        in_phase_datasets.append(ds)
    if with_seg and rec.mask is not None:
        from .. import __version__
        from .seg import write_liver_seg

        mask = sitk.ReadImage(str(rec.mask))
        seg_path = writer.path(900, 1)
        write_liver_seg(mask, in_phase_datasets, seg_path, series_number=900, manufacturer="LiverStiffness synth",
                        software_version=__version__, series_description="Liver (annotator)")
    return out


def _write_localizer(writer: _Writer, base, plan: SeriesPlan, series_uid: str, series_number: int, t2: sitk.Image, rec):
    """Three slices, one in each plane, through the middle of the T2w field of view."""
    arr = sitk.GetArrayFromImage(t2)
    mid = arr[arr.shape[0] // 2]
    pixels = _to_uint16(mid, _scale(arr))
    centre = t2.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t2.GetSize()])
    sp = t2.GetSpacing()
    planes = {"axial": ((1, 0, 0), (0, 1, 0)), "coronal": ((1, 0, 0), (0, 0, -1)), "sagittal": ((0, 1, 0), (0, 0, -1))}
    for k, (row, col) in enumerate(planes.values(), start=1):
        corner = np.asarray(centre) - np.asarray(row) * sp[0] * mid.shape[1] / 2 - np.asarray(col) * sp[1] * mid.shape[0] / 2
        geometry = {"ImagePositionPatient": [f"{v:.4f}" for v in corner],
                    "ImageOrientationPatient": [f"{v:g}" for v in (*row, *col)],
                    "PixelSpacing": [f"{sp[1]:.4f}", f"{sp[0]:.4f}"], "SliceThickness": "10"}
        _write_image(writer.path(series_number, k), base, plan, series_uid, series_number, k, geometry, pixels,
                     plan.te_ms[0], 1, None, rec)


def write_cohort_studies(manifest: str | Path, progress: bool = True) -> Path:
    """Every exam of a synthetic cohort's manifest as a DICOM study in ``<case>/dicom``; the
    manifest gains a ``study`` column pointing there."""
    from tqdm import tqdm

    from ..manifest import read_manifest, write_manifest

    manifest = Path(manifest)
    records = read_manifest(manifest)
    for i, rec in enumerate(tqdm(records, desc="dicom", unit="study", disable=not progress)):
        rec.study = write_exam_study(rec, Path(rec.t1w).parent / "dicom", exam_index=i)
    write_manifest(manifest, records)
    return manifest
