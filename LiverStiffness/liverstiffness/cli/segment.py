"""``liverstiffness segment``: an automatic liver mask for one T2-weighted image."""
from __future__ import annotations

import json
from pathlib import Path

from .options import add_device_option

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def register(sub) -> None:
    p = sub.add_parser(
        "segment", help="automatic liver mask of a T2-weighted MRI",
        description="Writes a binary liver mask (1 = liver) on the image's own grid: the largest connected "
                    "component with holes filled, and prints its volume and confidence (mean liver probability, "
                    "agreement between the model's fold networks). Check it before use, e.g. in Slicer's Segment Editor.")
    p.add_argument("--image", required=True, help="axial T2-weighted image (NIfTI/NRRD/MHA file or DICOM folder)")
    p.add_argument("--model", dest="seg_model", help="segmentation model folder (default: the shipped liver model)")
    p.add_argument("--segmenter", default="model", choices=("model", "totalsegmentator"),
                   help="model (default) or TotalSegmentator's total_mr liver, when it is installed")
    add_device_option(p)
    p.add_argument("--out", required=True, help="mask file to write (.nii.gz, .nrrd, .mha)")
    p.add_argument("--probability", help="also write the liver probability map (float, on the image grid) here")
    p.add_argument("--report", help="also write the volume, confidence, model and timings as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    import SimpleITK as sitk

    from ..errors import InputError
    from ..imageio import read_volume

    out = Path(args.out)
    if not out.name.endswith(MASK_SUFFIXES):
        raise InputError(f"--out {out}", f"needs one of the extensions {', '.join(MASK_SUFFIXES)}")
    if out.is_dir():
        raise InputError(f"--out {out}", "is a folder; give a file name")
    image = read_volume(args.image, "image")
    from ..segmentation.auto_mask import confidence_text, get_segmenter

    seg = get_segmenter(args.segmenter, args.seg_model, args.device)
    res = seg.segment(image, f"image {args.image}")
    out.parent.mkdir(parents=True, exist_ok=True)   # inputs accepted: now we may write
    sitk.WriteImage(res.mask, str(out), useCompression=True)
    if args.probability:
        sitk.WriteImage(res.probability, str(args.probability), useCompression=True)
    if args.report:
        Path(args.report).write_text(json.dumps({"image": str(Path(args.image).resolve()), "mask": str(out.resolve()),
                                                 **res.report()}, indent=2) + "\n")
    warn = " LOW CONFIDENCE: check it" if res.confidence.get("low_confidence") else ""
    print(f"Liver mask {res.volume_ml:.0f} mL ({confidence_text(res.confidence)}){warn} → {out}")
    return 0
