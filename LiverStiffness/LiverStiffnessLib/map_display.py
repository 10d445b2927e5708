"""The maps as the slice views draw them, in the Slicer panel and on the web page alike. A map of
patch tokens (rollout, and the layer maps) holds one value per patch of the model's crop (48 mm
cubes for the demo model); drawn as written it is a mosaic of blocks. For display it is
interpolated linearly between the patches' centres; the files (and the downloads) keep the patch
values. Every other map is drawn as written (``LiverStiffnessLogic.map_node``).
"""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from liverstiffness.errors import InputError

from .logic import map_window_max
from .mrml_convert import volume_from_sitk

PATCH_MAPS = ("rollout", "layer")   # kinds with one value per patch token (rollout, layerL, layerL_headH)


def patch_grid(report) -> tuple[int, int, int] | None:
    """Patch tokens along z, y, x of the model that wrote ``report`` (read from its model folder);
    None when that folder cannot be read."""
    try:
        from liverstiffness.stiffness.checkpoint import read_meta

        return tuple(read_meta(Path(report.model["path"])).config.grid)
    except (ImportError, InputError, OSError, KeyError, TypeError, ValueError):
        return None


def interpolate_patches(img: sitk.Image, crop: dict, grid_zyx) -> tuple[sitk.Image, str]:
    """A patch map ``img`` made smooth: linear between the patches' centres, the border patches'
    values held out to the crop's edge, 0 outside the crop; on ``img``'s grid. Also the patch size
    as text ("48×48×48 mm"). ``crop``: the crop's geometry as the report records it (x, y, z)."""
    size, spacing = [int(n) for n in crop["size"]], crop["spacing_mm"]
    grid = [int(g) for g in reversed(grid_zyx)]                       # x, y, z
    per_patch = [n // g for n, g in zip(size, grid)]
    crop_grid = sitk.Image(size, sitk.sitkUInt8)
    crop_grid.SetSpacing(spacing)
    crop_grid.SetOrigin(crop["origin_lps_mm"])
    crop_grid.SetDirection(crop["direction"])
    centres = sitk.Image(grid, sitk.sitkFloat32)
    centres.SetSpacing([s * p for s, p in zip(spacing, per_patch)])
    centres.SetOrigin(crop_grid.TransformContinuousIndexToPhysicalPoint([(p - 1) / 2 for p in per_patch]))
    centres.SetDirection(crop["direction"])
    # Each patch's value, read at its centre (well inside its block on the map's finer grid) ...
    values = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), centres, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    # ... and back onto the map's grid, linearly between the centres. ITK's linear interpolation
    # holds the border values out to half a patch beyond the outer centres (the crop's edge).
    smooth = sitk.Resample(values, img, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return smooth, "×".join(f"{s * p:g}" for s, p in zip(spacing, per_patch)) + " mm"


class MapDisplay:
    """The nodes the views draw for one result: the logic's, or for a patch map an interpolated
    copy (made once per map and "inside the liver" choice; removed with ``clear``)."""

    def __init__(self, logic, scene):
        self.logic, self.scene = logic, scene
        self.nodes: dict = {}
        self.patch_mm: dict[str, str] = {}
        self.drawn_as_written: set[str] = set()   # kinds shown as the logic's nodes

    def node(self, result, key: str, inside_liver: bool):
        """The node to draw for map ``key``; ``patch_mm[kind]`` then says whether it was interpolated."""
        kind = self.logic.map_node(result, key).GetAttribute("LiverStiffness.mapKind")
        if kind not in self.drawn_as_written and (kind, inside_liver) not in self.nodes:
            made = self._interpolated(result, kind, inside_liver)
            if made is None:
                self.drawn_as_written.add(kind)
            else:
                self.nodes[(kind, inside_liver)] = made
        if kind in self.drawn_as_written:
            return self.logic.map_node(result, key, inside_liver=inside_liver)
        return self.nodes[(kind, inside_liver)]

    def _interpolated(self, result, kind: str, inside_liver: bool):
        """A new node of patch map ``kind`` interpolated (zeroed outside the liver with
        ``inside_liver``), in the logic's colours and the whole map's window; None when ``kind`` is
        no patch map, or its model's patch grid cannot be read."""
        crop = (result.report.preprocessing or {}).get("crop")
        grid = patch_grid(result.report) if kind.startswith(PATCH_MAPS) and crop else None
        if grid is None:
            return None
        plain = result.attention[kind]
        img = sitk.ReadImage(str(result.output_dir / result.report.outputs["attention_maps"][kind]))
        img, self.patch_mm[kind] = interpolate_patches(img, crop, grid)
        top = map_window_max(sitk.GetArrayFromImage(img))   # the whole map's window, liver only or not
        if inside_liver:
            liver = sitk.ReadImage(str(result.output_dir / result.report.outputs["liver_mask"]))
            img = sitk.Mask(img, sitk.Cast(liver > 0, sitk.sitkUInt8))
        name = self.scene.GenerateUniqueName(f"{plain.GetName()} (interpolated{', liver only' if inside_liver else ''})")
        node = volume_from_sitk(img, plain, name, self.scene)
        node.SetAttribute("LiverStiffness.mapKind", kind)
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().Copy(plain.GetDisplayNode())
        node.GetDisplayNode().SetWindowLevelMinMax(0.0, top)
        return node

    def clear(self) -> None:
        for node in self.nodes.values():
            self.scene.RemoveNode(node)
        self.nodes, self.patch_mm, self.drawn_as_written = {}, {}, set()
