"""Build the phantom's anatomy templates from the 15 CHAOS T2-SPIR scans with manual labels.

    python recipes/build_phantom_atlas.py --chaos DIR [--plots DIR]

writes ``LiverStiffness/liverstiffness/phantom/atlas/chaos_NN.npz`` (classes in ``phantom/atlas.py``).
Run once; ``liverstiffness synth`` only reads the result. Data: CHAOS, CC BY-SA 4.0 (Kavur et al.,
Medical Image Analysis 2021); the templates are a derived work under the same licence.

How each class is derived (scans: 1.25 × 1.25 mm in-plane, 7.7 mm slices, fat-suppressed T2):
- liver, spleen, kidneys: the manual labels.
- body: signal above background, holes filled, per slice; where it runs into the scan's edge
  (many do: the scans are 320 mm wide) its outline is continued by a fitted ellipse, the tissue
  by the edge's; depth = in-plane distance to the skin.
- subcutaneous fat: a layer under the skin of typical thickness (fat suppression makes it too
  like muscle to segment); wall muscle inside it; the rest of the body is the cavity.
- in the cavity: bright = fluid, dark = visceral fat, black = gas (lung above the liver's
  centroid or dome), the rest = viscera.
- gallbladder: placed in its fossa under the liver (the scans' fluid blobs are ambiguous).
- spine: the spinal canal is the bright CSF blob near the posterior midline, tracked over
  slices; vertebral body, posterior elements and paraspinal muscles are placed around it, aorta
  and IVC in front of it (positions from the scans, rounded).
- hepatic vessels: liver voxels far brighter (slow-flowing portal/hepatic veins) or darker (flow
  voids) than the local liver signal.
- caudate lobe: the liver between the IVC and the hilum (an ellipsoid region of the liver).
Classes go onto the 2.5 mm grid by smoothing each class's indicator and taking the largest; the
grid is extended to ±150 mm around the liver by repeating the edge slices (lung above, viscera
below).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from liverstiffness.phantom.atlas import (
    ATLAS_DIR,
    CLASSES,
    HELD_OUT,
    N_CLASSES,
    SPACING_MM,
    TRAINING,
    C,
)

ROOT = Path(__file__).resolve().parents[1]

HALF_HEIGHT_MM = 150.0        # the grid covers the liver centroid ± this (sequence FOVs are 240 mm)
N_ANGLES = 72
PAD_PX = 40                   # the 320 mm scans are widened by 50 mm a side (bodies touch their edges)
SUBCUT_FAT_MM = 12.0          # template subcutaneous fat (front 1.35×, back 0.65×); BMI rescales it
WALL_MUSCLE_MM = 12.0         # abdominal wall muscle thickness inside the subcutaneous fat (rounded)
# Spine geometry relative to the spinal canal centre, LPS mm (x left, y posterior), rounded from the scans.
VERTEBRA_OFFSET, VERTEBRA_SEMI = (0.0, -28.0), (19.0, 16.0)
PARASPINAL_OFFSET, PARASPINAL_SEMI = (38.0, 14.0), (27.0, 30.0)
AORTA_OFFSET, AORTA_RADIUS = (12.0, -60.0), 11.0
IVC_OFFSET, IVC_RADIUS = (-28.0, -58.0), 12.0
CAUDATE_FROM_IVC, CAUDATE_SEMI = (22.0, -18.0), (22.0, 18.0, 30.0)
GB_SEMI, GB_TILT = (15.0, 33.0), np.deg2rad(35.0)   # gallbladder radius and half-length (mm), tilt


def _largest(mask2d):
    lab, n = ndimage.label(mask2d)
    if n == 0:
        return mask2d
    return lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def pad_scan(img: sitk.Image, lab: sitk.Image, pad: int = PAD_PX):
    """The scan widened by ``pad`` voxels in x and y (edge values repeated; no organ labels
    there) and a mask of the original field of view: many bodies touch its sides."""
    a = np.pad(sitk.GetArrayFromImage(img).astype(np.float32), ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    organs = np.pad(sitk.GetArrayFromImage(lab).astype(np.uint8), ((0, 0), (pad, pad), (pad, pad)))
    in_fov = np.zeros(a.shape, bool)
    in_fov[:, pad:-pad, pad:-pad] = True
    out = sitk.GetImageFromArray(a)
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(img.GetDirection())
    out.SetOrigin(img.TransformContinuousIndexToPhysicalPoint((-pad, -pad, 0.0)))
    return out, organs, in_fov


def _complete_body(b: np.ndarray, in_fov: np.ndarray) -> np.ndarray:
    """Where a slice's body runs into the field of view's edge, continue its outline as the
    axis-aligned ellipse fitted to the rest of the outline."""
    edge = b & ~ndimage.binary_erosion(b)
    away = ndimage.binary_erosion(in_fov, iterations=3)
    yy, xx = np.nonzero(edge & away)
    touching = (b & in_fov & ~away).sum() > 10
    if not touching or len(xx) < 20:
        return b & in_fov
    # a x² + b y² + c x + d y = 1 (least squares): an axis-aligned ellipse
    A = np.stack([xx ** 2, yy ** 2, xx, yy], 1).astype(float)
    coef = np.linalg.lstsq(A, np.ones(len(xx)), rcond=None)[0]
    Y, X = np.mgrid[:b.shape[0], :b.shape[1]]
    inside = coef[0] * X ** 2 + coef[1] * Y ** 2 + coef[2] * X + coef[3] * Y < 1
    if coef[0] <= 0 or coef[1] <= 0:
        return b & in_fov
    return _largest((b & in_fov) | (inside & ~in_fov))


def classify(img: sitk.Image, lab: sitk.Image) -> tuple[np.ndarray, dict, sitk.Image]:
    """Atlas classes [z, y, x] on the scan's grid widened by PAD_PX, landmarks in LPS mm, and
    the widened grid."""
    img, organs, in_fov = pad_scan(img, lab)
    a = sitk.GetArrayFromImage(img)
    sp = np.array(img.GetSpacing())                      # x, y, z
    valid = a.reshape(len(a), -1).max(1) > 1             # blank slices at the ends of some scans
    liver_med = float(np.median(a[organs == 1]))
    kidney_med = float(np.median(a[(organs == 2) | (organs == 3)]))
    s = ndimage.gaussian_filter(a, (0, 0.8, 0.8))
    cls = np.zeros(a.shape, np.uint8)

    # Body, depth below the skin (in-plane), subcutaneous fat and wall muscle, per slice.
    body = np.zeros(a.shape, bool)
    for k in np.flatnonzero(valid):
        b = ndimage.gaussian_filter(a[k], 2.0) > 0.08 * liver_med
        b = ndimage.binary_fill_holes(_largest(ndimage.binary_opening(b & in_fov[k], iterations=3)))
        body[k] = ndimage.binary_fill_holes(_complete_body(b, in_fov[k]))
    organ = organs > 0
    depth = np.stack([ndimage.distance_transform_edt(body[k], sampling=sp[1::-1]) for k in range(len(a))])
    # Fat suppression leaves subcutaneous fat and muscle too alike on these scans to separate
    # reliably, so the layers are geometric: fat of a typical thickness, thicker in front than
    # over the back; the deformation then sets each patient's fat thickness from BMI.
    subcut = np.zeros_like(body)
    for k in np.flatnonzero(valid):
        jy, ix = np.argwhere(body[k]).mean(0)
        yy, xx = np.mgrid[:a.shape[1], :a.shape[2]]
        # unit vector towards the front of the body (image rows run posterior → anterior here)
        v = np.stack([(xx - ix) * sp[0], (yy - jy) * sp[1]])
        front = -(np.array(img.GetDirection()).reshape(3, 3)[1, :2] @ v.reshape(2, -1)).reshape(v.shape[1:])
        cos_front = front / np.maximum(np.hypot(*v), 1e-3)
        thick = SUBCUT_FAT_MM * (1 + 0.35 * cos_front)
        subcut[k] = body[k] & (depth[k] < thick) & ~organ[k]
    wall = body & ~subcut & ~organ & (depth < SUBCUT_FAT_MM * 1.35 + WALL_MUSCLE_MM)
    fat_thr = np.log(0.45 * liver_med + 1.0)        # suppressed fat: well below muscle on T2
    cavity = body & ~subcut & ~wall

    # Physical coordinates of every voxel (LPS mm).
    kk, jj, ii = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), np.arange(a.shape[2]), indexing="ij")
    d = np.array(img.GetDirection()).reshape(3, 3)
    idx = np.stack([ii, jj, kk], -1).reshape(-1, 3) * sp
    xyz = (idx @ d.T + np.array(img.GetOrigin())).reshape(*a.shape, 3)
    X, Y, Z = xyz[..., 0], xyz[..., 1], xyz[..., 2]

    def centroid(m):
        return xyz[m].mean(0)

    liver_c = centroid(organs == 1)
    lz = Z[organs == 1]
    liver_top, liver_bottom = float(lz.max()), float(lz.min())

    # Cavity contents by signal.
    bright = s > 0.7 * kidney_med
    black = s < 0.08 * liver_med
    dark = (np.log(s + 1.0) < fat_thr) & ~black
    cls[cavity] = C["viscera"]
    cls[cavity & dark] = C["visceral_fat"]
    cls[cavity & black] = C["bowel_gas"]
    # Air above the liver's centroid is lung (the stomach's gas there has the same signal: none);
    # dark tissue is fat at any level.
    cls[cavity & black & (Z > liver_c[2])] = C["lung"]
    cls[cavity & (dark | black) & (Z > 0.5 * (liver_c[2] + liver_top))] = C["lung"]   # lung bases around the dome
    cls[cavity & bright] = C["fluid"]
    cls[wall] = C["wall_muscle"]
    cls[subcut] = C["subcutaneous_fat"]

    # Spine: the spinal canal is the bright CSF blob nearest the posterior midline.
    canal = []
    for k in np.flatnonzero(valid):
        if not body[k].any():
            continue
        bx = X[k][body[k]].mean()
        ymax = Y[k][body[k]].max()
        cand = bright[k] & body[k] & (np.abs(X[k] - bx) < 45) & (Y[k] > ymax - 110) & (depth[k] > 12)
        lab2, m = ndimage.label(cand)
        best_k = None
        for i in range(1, m + 1):
            area = (lab2 == i).sum() * sp[0] * sp[1]
            if 30 <= area <= 500:
                cx, cy = X[k][lab2 == i].mean(), Y[k][lab2 == i].mean()
                score = abs(cx - bx) + 0.5 * (ymax - cy)
                if best_k is None or score < best_k[0]:
                    best_k = (score, cx, cy)
        if best_k is not None:
            canal.append((Z[k].mean(), best_k[1], best_k[2]))
    canal = np.array(canal)
    # A straight line in z through the medians is robust to the odd wrong blob.
    keep = (np.abs(canal[:, 1] - np.median(canal[:, 1])) < 15) & (np.abs(canal[:, 2] - np.median(canal[:, 2])) < 20)
    fit_x = np.polyfit(canal[keep, 0], canal[keep, 1], 1)
    fit_y = np.polyfit(canal[keep, 0], canal[keep, 2], 1)
    cx, cy = np.polyval(fit_x, Z), np.polyval(fit_y, Z)

    def ellipse(off, semi):
        return ((X - cx - off[0]) / semi[0]) ** 2 + ((Y - cy - off[1]) / semi[1]) ** 2 < 1

    soft = body & ~subcut & ~organ
    for side in (-1, 1):
        para = ellipse((side * PARASPINAL_OFFSET[0], PARASPINAL_OFFSET[1]), PARASPINAL_SEMI) & soft
        cls[para & ~bright] = C["back_muscle"]
    cls[ellipse(VERTEBRA_OFFSET, VERTEBRA_SEMI) & soft] = C["bone"]
    cls[(np.abs(X - cx) < 8) & (Y > cy + 6) & (Y < cy + 38) & soft] = C["bone"]
    cls[ellipse((0, 0), (7.0, 7.0)) & soft] = C["spinal_canal"]
    aorta = ellipse(AORTA_OFFSET, (AORTA_RADIUS,) * 2) & soft
    ivc = ellipse(IVC_OFFSET, (IVC_RADIUS,) * 2) & soft & (Z < liver_top - 5)
    cls[aorta | ivc] = C["great_vessel"]

    # Organs from the manual labels.
    cls[organs == 1] = C["liver"]
    cls[organs == 2] = C["kidney_right"]
    cls[organs == 3] = C["kidney_left"]
    cls[organs == 4] = C["spleen"]

    # Hepatic vessels: far from the local liver signal (slow flow bright, flow voids dark).
    liver = organs == 1
    local = ndimage.gaussian_filter(np.where(liver, s, 0), (0.5, 12, 12)) / \
        np.maximum(ndimage.gaussian_filter(liver.astype(np.float32), (0.5, 12, 12)), 1e-3)
    ratio = s / np.maximum(local, 1e-3)
    liver_depth = np.stack([ndimage.distance_transform_edt(liver[k], sampling=sp[1::-1]) for k in range(len(a))])
    vessel = liver & ((ratio > 1.3) | ((ratio < 0.55) & (liver_depth > 4)))
    vessel = ndimage.binary_opening(vessel, structure=np.ones((1, 2, 2)))
    cls[vessel] = C["hepatic_vessel"]

    # Caudate lobe: the liver just left of and in front of the IVC, around the hilum's level.
    zc = liver_c[2] + 0.15 * (liver_top - liver_c[2])
    ivc_x, ivc_y = float(np.polyval(fit_x, zc)) + IVC_OFFSET[0], float(np.polyval(fit_y, zc)) + IVC_OFFSET[1]
    cc = np.array([ivc_x + CAUDATE_FROM_IVC[0], ivc_y + CAUDATE_FROM_IVC[1], zc])
    # Where that point misses the liver (a different build of the hilum), take the nearest liver
    # point a little inside the organ instead.
    deep = (cls == C["liver"]) & (np.stack([ndimage.distance_transform_edt(organs[k] == 1, sampling=sp[1::-1])
                                            for k in range(len(a))]) > 10)
    cand = xyz[deep]
    cc = cand[np.argmin(np.linalg.norm(cand - cc, axis=1))] if len(cand) else cc
    caud = (((X - cc[0]) / CAUDATE_SEMI[0]) ** 2 + ((Y - cc[1]) / CAUDATE_SEMI[1]) ** 2
            + ((Z - cc[2]) / CAUDATE_SEMI[2]) ** 2 < 1) & (cls == C["liver"])
    cls[caud] = C["caudate"]
    # Gallbladder: the scans' fluid blobs are too ambiguous to tell it from bowel, so it is placed
    # in its fossa: on the liver's inferior surface below the hilum, in front of the IVC's line,
    # a 3 × 3 × 6.5 cm pear tilted forward (~30 mL, fasting), indenting the liver as in life.
    target = np.array([ivc_x - 5.0, liver_c[1] - 45.0, liver_c[2] - 45.0])
    surface = (cls == C["liver"]) & ~np.stack([ndimage.binary_erosion(organs[k] == 1) for k in range(len(a))])
    cand = xyz[surface & (Z < liver_c[2])]
    p = cand[np.argmin(np.linalg.norm(cand - target, axis=1))]
    gc = p + np.array([0.0, -6.0, -10.0])
    u = np.array([0.0, -np.sin(GB_TILT), np.cos(GB_TILT)])      # long axis: up and back into the fossa
    d = xyz - gc
    along = d @ u
    across = np.linalg.norm(d - along[..., None] * u, axis=-1)
    gb = (along / GB_SEMI[1]) ** 2 + (across / GB_SEMI[0]) ** 2 < 1
    cls[gb & ~np.isin(cls, [C[n] for n in ("spleen", "kidney_right", "kidney_left", "bone", "great_vessel")])
        & (organs != 2) & (organs != 3) & (organs != 4)] = C["gallbladder"]
    # Outside the scanned slices there is nothing yet (filled on the atlas grid).
    cls[~valid] = 0
    landmarks = {
        "liver_centroid": liver_c, "spleen_centroid": centroid(organs == 4),
        "caudate_centre": cc, "ivc": np.array([ivc_x, ivc_y, zc]), "gallbladder": gc,
        "spine": np.array([np.polyval(fit_x, zc), np.polyval(fit_y, zc), zc]),
        "liver_top": np.array([liver_c[0], liver_c[1], liver_top]),
        "liver_bottom": np.array([liver_c[0], liver_c[1], liver_bottom]),
        "scan_z_range": np.array([Z[valid].min(), Z[valid].max(), 0.0]),
    }
    return cls, landmarks, img


def to_atlas_grid(cls: np.ndarray, img: sitk.Image, landmarks: dict) -> tuple[np.ndarray, np.ndarray]:
    """Classes resampled onto an axis-aligned 2.5 mm grid around the liver; edges extended in z."""
    src = sitk.GetImageFromArray(cls)
    src.CopyInformation(img)
    lo = np.min([img.TransformIndexToPhysicalPoint(c) for c in
                 [(0, 0, 0), (img.GetWidth() - 1, img.GetHeight() - 1, 0)]], axis=0)
    hi = np.max([img.TransformIndexToPhysicalPoint(c) for c in
                 [(0, 0, 0), (img.GetWidth() - 1, img.GetHeight() - 1, 0)]], axis=0)
    zc = landmarks["liver_centroid"][2]
    origin = np.array([lo[0], lo[1], zc - HALF_HEIGHT_MM])
    size = np.ceil((np.array([hi[0], hi[1], zc + HALF_HEIGHT_MM]) - origin) / SPACING_MM).astype(int) + 1
    ref = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    ref.SetOrigin(origin.tolist())
    ref.SetSpacing([SPACING_MM] * 3)
    best = np.full(size[::-1], -1.0, np.float32)
    out = np.zeros(size[::-1], np.uint8)
    sp = np.array(img.GetSpacing())
    for code, _, _ in CLASSES:
        ind = sitk.Cast(src == code, sitk.sitkFloat32)
        # Light in-plane smoothing, more across the 7.7 mm slices to round off the steps.
        ind = sitk.SmoothingRecursiveGaussian(ind, [0.8 * sp[0], 0.8 * sp[1], 0.45 * sp[2]])
        arr = sitk.GetArrayFromImage(sitk.Resample(ind, ref, sitk.Transform(), sitk.sitkLinear, -1.0))
        win = arr > best
        out[win], best[win] = code, arr[win]
    # Extend beyond the scanned slices: repeat the edge slice, organs replaced (lung above, viscera below).
    z = origin[2] + SPACING_MM * np.arange(size[2])
    zmin, zmax = landmarks["scan_z_range"][:2]
    inside = np.flatnonzero((z >= zmin + 2) & (z <= zmax - 2))
    top, bottom = inside.max(), inside.min()
    organ = np.isin(np.arange(256), [C[n] for n in ("liver", "caudate", "hepatic_vessel", "spleen", "kidney_right",
                                                     "kidney_left", "gallbladder")])
    above = out[top].copy()
    cavity_above = np.isin(above, [C[n] for n in ("viscera", "visceral_fat", "fluid", "bowel_gas")]) | organ[above]
    above[cavity_above] = C["lung"]
    below = out[bottom].copy()
    below[organ[below]] = C["viscera"]
    out[top + 1:] = above
    out[:bottom] = below
    return out, origin


def radial_profiles(labels: np.ndarray, origin: np.ndarray):
    """Per slice: body centre (x, y) and, along N_ANGLES rays from it, the radius where the
    subcutaneous fat begins and the radius of the skin (mm)."""
    nz = labels.shape[0]
    centre = np.zeros((nz, 2), np.float32)
    fat_inner = np.zeros((nz, N_ANGLES), np.float32)
    skin = np.zeros((nz, N_ANGLES), np.float32)
    th = np.linspace(0, 2 * np.pi, N_ANGLES, endpoint=False)
    r = np.arange(0, 320, 1.0)
    for k in range(nz):
        body = labels[k] > 0
        if not body.any():
            continue
        jy, ix = np.argwhere(body).mean(0)
        centre[k] = origin[0] + ix * SPACING_MM, origin[1] + jy * SPACING_MM
        px = ix + np.cos(th)[:, None] * r[None] / SPACING_MM
        py = jy + np.sin(th)[:, None] * r[None] / SPACING_MM
        ray = ndimage.map_coordinates(labels[k], [py, px], order=0, cval=0)
        for t in range(N_ANGLES):
            inb = np.flatnonzero(ray[t] > 0)
            if len(inb) == 0:
                continue
            last = inb.max()
            skin[k, t] = r[last]
            i = last
            while i > 0 and ray[t, i] == C["subcutaneous_fat"]:
                i -= 1
            fat_inner[k, t] = r[i]
    return centre, fat_inner, skin


def build(case: int, chaos: Path, plots: Path | None) -> Path:
    img = sitk.ReadImage(str(chaos / f"image_{case}.nii.gz"))
    lab = sitk.ReadImage(str(chaos / f"label_{case}.nii.gz"))
    cls, landmarks, img = classify(img, lab)
    labels, origin = to_atlas_grid(cls, img, landmarks)
    centre, fat_inner, skin = radial_profiles(labels, origin)
    names = sorted(landmarks)
    out = ATLAS_DIR / f"chaos_{case:02d}.npz"
    np.savez_compressed(out, labels=labels, origin=origin.astype(np.float32),
                        spacing=np.full(3, SPACING_MM, np.float32), case=case,
                        landmark_names=np.array(names), landmarks=np.array([landmarks[n] for n in names], np.float32),
                        body_centre_mm=centre, fat_inner_mm=fat_inner.astype(np.float16), skin_mm=skin.astype(np.float16))
    if plots is not None:
        _plot(case, img, cls, labels, origin, landmarks, plots)
    return out


def _plot(case, img, cls, labels, origin, landmarks, plots: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ["black", "#8fb3e0", "orange", "#f0e0a0", "#c0f0a0", "green", "darkred", "#f4b0c0", "purple", "white",
               "saddlebrown", "cyan", "yellow", "#ff80ff", "gray", "red", "blue", "lime", "teal"]
    cmap = ListedColormap(colours[:N_CLASSES])
    a = sitk.GetArrayFromImage(img)
    zz = np.flatnonzero(np.isin(cls, [C["liver"], C["caudate"]]).any((1, 2)))
    fig, axs = plt.subplots(2, 4, figsize=(24, 12))
    for ax, q in zip(axs[0], (0.15, 0.45, 0.65, 0.9)):
        k = zz[int(q * (len(zz) - 1))]
        ax.imshow(a[k], cmap="gray", vmax=np.percentile(a, 99.5))
        ax.imshow(np.ma.masked_equal(cls[k], 0), cmap=cmap, vmin=0, vmax=N_CLASSES - 1, alpha=0.35, interpolation="nearest")
        ax.set_title(f"case {case} slice {k}")
    j = int((landmarks["liver_centroid"][1] - origin[1]) / SPACING_MM)
    i = int((landmarks["liver_centroid"][0] - origin[0]) / SPACING_MM)
    k = int((landmarks["caudate_centre"][2] - origin[2]) / SPACING_MM)
    axs[1, 0].imshow(labels[::-1, j, :], cmap=cmap, vmin=0, vmax=N_CLASSES - 1, interpolation="nearest")
    axs[1, 0].set_title("atlas coronal")
    axs[1, 1].imshow(labels[::-1, :, i], cmap=cmap, vmin=0, vmax=N_CLASSES - 1, interpolation="nearest")
    axs[1, 1].set_title("atlas sagittal")
    axs[1, 2].imshow(labels[k], cmap=cmap, vmin=0, vmax=N_CLASSES - 1, interpolation="nearest")
    axs[1, 2].set_title("atlas axial (caudate level)")
    axs[1, 3].axis("off")
    for code, name, _ in CLASSES:
        axs[1, 3].text(0.05, 1 - code / N_CLASSES, f"{code} {name}", color=cmap(code), fontsize=14, transform=axs[1, 3].transAxes)
    plt.tight_layout()
    plots.mkdir(parents=True, exist_ok=True)
    plt.savefig(plots / f"atlas_{case:02d}.png", dpi=40)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chaos", type=Path, required=True,
                   help="folder of the 15 CHAOS T2-SPIR cases (image_N.nii.gz / label_N.nii.gz)")
    p.add_argument("--plots", type=Path, default=None, help="write a check figure per case here")
    p.add_argument("--cases", type=lambda t: [int(c) for c in t.split(",")], default=sorted(TRAINING + HELD_OUT))
    args = p.parse_args(argv)
    ATLAS_DIR.mkdir(exist_ok=True)
    for case in args.cases:
        out = build(case, args.chaos, args.plots)
        print(f"case {case}: {out.relative_to(ROOT)} ({out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
