"""The estimate as a TID 1500 Measurement Report in a Comprehensive 3D SR (highdicom).

One volumetric measurement group for the liver, referencing segment 1 of the liver SEG:

- measurements (TID 300): "MRE-equivalent liver stiffness" in kPa, the lower and upper limits of
  its prediction interval (kPa), and the liver volume (mL) when mask QA measured it;
- qualitative evaluations: the category, the cut-off table it comes from, the mask's source,
  each mask QA finding ("none" when there is none), and each MR sequence used and each not used,
  coded DCM 110804 "T1 Weighted MR Signal Intensity", 110805 "T2 Weighted MR Signal Intensity"
  and 113043 "Diffusion weighted";
- a TEXT item naming the sequences used and those not used with why, as report.json's
  ``sequences_text`` ("T2w, DWI only (no T1w: no series in the study matched the T1w rules)");
- algorithm identification (TID 4019): the model's name and version, and as parameters each
  weight file's SHA-256, the interval's coverage (and the sequences its calibration exams had,
  when one is missing) and the cut-off table's bands.

Concepts with no standard code use the private coding scheme ``99LVRSTIF`` (declared in the
Coding Scheme Identification Sequence); the numbers are report.json's, unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..report import Report

PRIVATE_SCHEME = "99LVRSTIF"
PRIVATE_SCHEME_NAME = "LiverStiffness private codes"


def _private(value: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value[:16], scheme_designator=PRIVATE_SCHEME, meaning=meaning[:64])


def concepts() -> dict:
    """The private concept names used in the report (also what a reader looks them up by)."""
    return {"stiffness": _private("LS-KPA", "MRE-equivalent liver stiffness"),
            "interval_low": _private("LS-PI-LOW", "Lower limit of prediction interval"),
            "interval_high": _private("LS-PI-HIGH", "Upper limit of prediction interval"),
            "category": _private("LS-CATEGORY", "Liver stiffness category"),
            "cutoff_table": _private("LS-CUTOFFS", "Cut-off table"),
            "mask_source": _private("LS-MASK-SOURCE", "Liver mask source"),
            "mask_qa": _private("LS-MASK-QA", "Liver mask QA finding"),
            "sequence_used": _private("LS-SEQ-USED", "MR sequence used"),
            "sequence_missing": _private("LS-SEQ-NOT-USED", "MR sequence not used"),
            "sequences": _private("LS-SEQUENCES", "MR sequences used and not used")}


MAP_REGION_PREFIX = "Stiffness map mean, "


def map_region_concept(index: int, region: str):
    """The name of a region's mean of the stiffness map (``report.stiffness_map["regions_kpa"]``)."""
    return _private(f"LS-MAP-R{index}", MAP_REGION_PREFIX + region)


def sequence_codes() -> dict:
    """The standard codes of the sequences (report.json's names → DCM concepts)."""
    from pydicom.sr.codedict import codes

    return {"t1w": codes.DCM.T1WeightedMRSignalIntensity, "t2w": codes.DCM.T2WeightedMRSignalIntensity,
            "dwi": codes.DCM.DiffusionWeighted}


def _algorithm(report: Report):
    import highdicom as hd

    model = report.model
    table = report.cutoff_table or {}
    params = [f"weights {name} sha256 {digest}" for name, digest in sorted(model.get("sha256", {}).items())]
    params.append(f"prediction interval coverage {report.interval_coverage}")
    if report.sequences_missing:
        params.append(f"prediction interval calibrated on exams with the same sequences ({report.interval_basis})")
    params += [f"prediction interval {side} limit unbounded (too few calibration exams)"
               for side, v in zip(("lower", "upper"), report.interval_kpa) if not math.isfinite(float(v))]
    if table:
        bands = "; ".join(f"{b['low_kpa']:g}-{'' if b['high_kpa'] is None else format(b['high_kpa'], 'g')} kPa {b['label']}"
                          for b in table.get("bands", []))
        params.append(f"cut-off table {table.get('name')} ({table.get('reference', '')}): {bands}")
    params.append("MRE-equivalent: the shear stiffness 60 Hz MR elastography would measure; not a transient-elastography value")
    return hd.sr.AlgorithmIdentification(name=str(model.get("name", "liverstiffness"))[:64],
                                         version=str(model.get("version", ""))[:64], parameters=params)


def _referenced_liver_segment(seg):
    """Segment 1 of ``seg`` with the source images it was drawn on. Built by hand: highdicom's
    ``ReferencedSegment.from_segmentation`` looks for the segment in the per-frame groups, where a
    one-segment SEG written by highdicom does not put it (it is in the shared groups)."""
    import highdicom as hd

    sources = [hd.sr.SourceImageForSegmentation(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
               for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence]
    return hd.sr.ReferencedSegment(sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                                   segment_number=1, source_images=sources)


def build_measurement_report(report: Report, seg, observer_uid: str, stiffness_pm=None):
    """The TID 1500 content for ``report``, its ROI the SEG's segment 1 (``stiffness_pm``: the
    stiffness map's Parametric Map, which the regional means reference)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    c = concepts()
    algo = _algorithm(report)
    kpa = codes.UCUM.Kilopascal
    lo, hi = report.interval_kpa
    measurements = [hd.sr.Measurement(name=c["stiffness"], value=report.stiffness_kpa, unit=kpa, algorithm_id=algo)]
    # An interval limit is infinite when the calibration set was too small to bound it: then it is
    # left out (DICOM numbers are finite) and the algorithm parameters say so.
    measurements += [hd.sr.Measurement(name=c[key], value=float(v), unit=kpa, algorithm_id=algo)
                     for key, v in (("interval_low", lo), ("interval_high", hi)) if math.isfinite(float(v))]
    if stiffness_pm is not None and report.stiffness_map:
        # The map the means were taken from, as the image each measurement is made on.
        source = [hd.sr.SourceImageForMeasurement(str(stiffness_pm.SOPClassUID), str(stiffness_pm.SOPInstanceUID))]
        measurements += [hd.sr.Measurement(name=map_region_concept(i, region), value=float(v), unit=kpa,
                                           derivation=codes.SCT.Mean, algorithm_id=algo, referenced_images=source)
                         for i, (region, v) in enumerate(report.stiffness_map.get("regions_kpa", {}).items())]
    volume = (report.mask_qa or {}).get("volume_ml")
    if volume is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.Volume, value=float(volume),
                                              unit=hd.sr.CodedConcept("mL", "UCUM", "milliliter")))
    table = report.cutoff_table or {"name": "mayo-60hz", "bands": report.mre_bands}
    index = next((str(i) for i, b in enumerate(table["bands"]) if b["label"] == report.category), "NA")  # NA: withheld
    evaluations = [
        hd.sr.QualitativeEvaluation(c["category"], _private(f"C{index}-{table['name']}", report.category)),
        hd.sr.QualitativeEvaluation(c["cutoff_table"], _private(table["name"].upper(), table["name"])),
        hd.sr.QualitativeEvaluation(c["mask_source"], _private(
            "MASK-" + (report.mask or {}).get("source", "given").upper(),
            f"{(report.mask or {}).get('source', 'given')} liver mask"))]
    flags = report.qa_flags
    for f in flags:
        evaluations.append(hd.sr.QualitativeEvaluation(c["mask_qa"], _private(f["code"], f"{f['code']}: {f['message']}")))
    if report.mask_qa is not None and not flags:
        evaluations.append(hd.sr.QualitativeEvaluation(c["mask_qa"], _private("NONE", "no mask QA finding")))
    seq = sequence_codes()
    evaluations += [hd.sr.QualitativeEvaluation(c["sequence_used"], seq[s]) for s in report.sequences_used if s in seq]
    evaluations += [hd.sr.QualitativeEvaluation(c["sequence_missing"], seq[s]) for s in report.sequences_missing if s in seq]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="liver"),
        referenced_segment=_referenced_liver_segment(seg),
        finding_type=codes.SCT.Liver, finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)], algorithm_id=algo,
        measurements=measurements, qualitative_evaluations=evaluations)
    # Which sequences, and why any is missing, in words (a reason is free text, longer than a code's meaning).
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=c["sequences"], value=report.sequences_text[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=observer_uid, name="LiverStiffness", manufacturer_name="LiverStiffness project",
            model_name=str(report.model.get("name", ""))[:64]))
    return hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                   procedure_reported=codes.LN.MRIUnspecifiedBodyRegion, imaging_measurements=[group],
                                   title=codes.DCM.ImagingMeasurementReport)


def write_report_sr(report: Report, evidence: list, seg, path: str | Path, *, series_number: int,
                    software_version: str, stiffness_pm=None) -> object:
    """Write the SR for ``report``; ``evidence``: every dataset it rests on (source images, SEG, maps)."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    content = build_measurement_report(report, seg, hd.UID(), stiffness_pm)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=content, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LiverStiffness", is_complete=True,
        is_final=False, is_verified=False, series_description="MRE-equivalent liver stiffness")
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "LiverStiffness project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SoftwareVersions = software_version
    sr.save_as(str(path))
    return sr


def read_report_sr(path: str | Path) -> dict:
    """The numbers and codes of an SR written by :func:`write_report_sr`, for checks and tools."""
    import highdicom as hd

    sr = hd.sr.srread(str(path))
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    c = concepts()
    def value(name):                    # None when the report left it out (an unbounded interval limit)
        found = group.get_measurements(name=c[name])
        return float(found[0].value) if found else None

    evaluation = lambda name: [e.value.meaning for e in group.get_qualitative_evaluations(name=c[name])]  # noqa: E731
    by_code = {(code.value, code.scheme_designator): name for name, code in sequence_codes().items()}

    def sequences(name):                # report.json's names of the sequences coded under ``name``
        return [by_code.get((e.value.value, e.value.scheme_designator), e.value.meaning)
                for e in group.get_qualitative_evaluations(name=c[name])]

    text = [str(item.TextValue) for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == c["sequences"].value]
    m = group.get_measurements(name=c["stiffness"])[0]
    regions = {str(x.name.meaning)[len(MAP_REGION_PREFIX):]: float(x.value) for x in group.get_measurements()
               if str(x.name.meaning).startswith(MAP_REGION_PREFIX)}
    return {"stiffness_kpa": value("stiffness"), "interval_kpa": [value("interval_low"), value("interval_high")],
            "unit": m.unit.value, "category": evaluation("category")[0], "cutoff_table": evaluation("cutoff_table")[0],
            "mask_source": evaluation("mask_source")[0], "mask_qa": evaluation("mask_qa"),
            "sequences_used": sequences("sequence_used"), "sequences_missing": sequences("sequence_missing"),
            "sequences_text": text[0] if text else None, "map_regions_kpa": regions,
            "segment_sop_uid": str(group.referenced_segment.referenced_sop_instance_uid),
            "study_uid": str(sr.StudyInstanceUID), "patient_id": str(sr.PatientID)}
