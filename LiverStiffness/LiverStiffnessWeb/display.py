"""What the three slice views show: the chosen sequence (else the reference) as background, the liver mask as an
outline, and, once there is a result, a map over them; and where the views are, in mm.

The choices (background, mask, overlay, map, opacity, "only inside the liver") are read from the
session's state; the maps' nodes and notes come from ``LiverStiffnessLogic``, as in the Slicer panel,
a patch map's interpolated for display (``LiverStiffnessLib/map_display.py``); the stiffness map of a
model trained on elastograms is the logic's too, drawn in kPa (``stiffness_map.py``).
"""
from __future__ import annotations

import numpy as np
import slicer

from LiverStiffnessLib.logic import map_key
from LiverStiffnessLib.map_display import MapDisplay
from LiverStiffnessLib.nodes import SEQUENCES

from . import stiffness_map
from .series import AUTO_MASK, LoadedSeries, label_node

STIFFNESS = "stiffness"     # the overlay choice of the stiffness map; "attention": the maps of where the model looked


class SliceDisplay:
    """The slice views of one session (``sapp``: its trame-slicer application)."""

    def __init__(self, sapp, logic, state):
        self.sapp = sapp
        self.logic = logic
        self.state = state
        self.maps = MapDisplay(logic, sapp.scene)

    def views(self) -> list:
        return self.sapp.view_manager.get_slice_views()

    def background_node(self, series: dict[str, LoadedSeries]):
        """The chosen sequence's volume; when that one is not assigned, the reference's (the first
        assigned of T1w, T2w, DWI: the grid the results lie on)."""
        keys = [self.state.background or "t1w", *SEQUENCES]
        x = next((series[self.state[k]] for k in keys if self.state[k] and self.state[k] in series), None)
        return x.node if x else None

    def _background(self, series: dict[str, LoadedSeries]):
        """``background_node``, its name put in the state (shown under the views, read by the tests)."""
        node = self.background_node(series)
        with self.state:
            self.state.background_name = node.GetName() if node is not None else ""
        return node

    def show_inputs(self, series: dict[str, LoadedSeries], auto_mask) -> None:
        """Background: the chosen sequence; the liver mask as an outline; no overlay until a result."""
        dm = self.sapp.display_manager
        dm.show_volume_in_slice_background(self._background(series))
        dm.show_volume_in_slice_foreground(None)
        self._show_mask_outline(series, auto_mask)
        dm.reset_views()
        self._report_positions()

    def show_map(self, series: dict[str, LoadedSeries], auto_mask, result) -> None:
        """The chosen map of ``result`` (ResultNodes) over the background, with its note and legend:
        the stiffness map (kPa) when chosen and the result has one, else the chosen attention map."""
        s = self.state
        if s.overlay == STIFFNESS and stiffness_map.available(result):
            node, note = stiffness_map.node(result), stiffness_map.note(self.logic, result.report)
        else:
            # Saliency is one map per sequence; rollout and GradCAM one for all; the rollout where the
            # run made no such map.
            key = map_key(s.map_kind, s.map_seq)
            node = self.maps.node(result, key if key in result.attention else "rollout", inside_liver=bool(s.liver_only))
            kind = node.GetAttribute("LiverStiffness.mapKind")
            note = self.logic.map_note(result.report, kind) + (
                f" Drawn smoothly: interpolated between its {self.maps.patch_mm[kind]} patches (the file keeps one "
                "value per patch)." if kind in self.maps.patch_mm else "")
        dm = self.sapp.display_manager
        dm.show_volume_in_slice_background(self._background(series))
        dm.show_volume_in_slice_foreground(node)
        for view in self.views():
            view.set_foreground_opacity(float(s.opacity))
        self._show_mask_outline(series, auto_mask)
        with self.state:
            s.map_note = note
            if node.GetAttribute("LiverStiffness.mapKind") != stiffness_map.MAP_KIND:
                s.legend_max = round(node.GetDisplayNode().GetWindowLevelMax(), 2)
            # Read back from the views, so the page (and the tests) see what the views really use.
            s.applied_opacity = round(self.views()[0].get_foreground_opacity(), 2)
            s.overlay_shown = self._overlay_shown()

    def _overlay_shown(self) -> dict | None:
        """What the views draw over the background, read back from the first view's MRML nodes: the
        volume's name and map kind, its colour table and window, and its values above 0."""
        node = self.sapp.scene.GetNodeByID(self.views()[0]._logic.GetSliceCompositeNode().GetForegroundVolumeID() or "")
        if node is None:
            return None
        disp = node.GetDisplayNode()
        colours = disp.GetColorNode()
        values = slicer.util.arrayFromVolume(node)
        above = values[values > 0]
        return {"name": node.GetName(), "kind": node.GetAttribute("LiverStiffness.mapKind") or "",
                "colours": colours.GetName() if colours is not None else "",
                "window": [round(disp.GetWindowLevelMin(), 3), round(disp.GetWindowLevelMax(), 3)],
                "threshold": [disp.GetLowerThreshold(), disp.GetUpperThreshold()] if disp.GetApplyThreshold() else None,
                "voxels_above_zero": int(above.size),
                "mean_above_zero": round(float(np.mean(above, dtype=np.float64)), 4) if above.size else None}

    def hide_map(self) -> None:
        self.sapp.display_manager.show_volume_in_slice_foreground(None)
        self.maps.clear()
        with self.state:
            self.state.overlay_shown = None

    def centre_on(self, r: float, a: float, s: float) -> None:
        """Every view through the point (RAS, mm)."""
        for view in self.views():
            view._logic.GetSliceNode().JumpSliceByCentering(r, a, s)
            view.schedule_render()
        self._report_positions()

    def _show_mask_outline(self, series: dict[str, LoadedSeries], auto_mask) -> None:
        """A mask series as a labelmap outline; the automatic mask (a segmentation) only when chosen."""
        s = self.state
        label = None
        if s.mask and s.mask != AUTO_MASK and s.mask in series:
            label = label_node(self.sapp.scene, series[s.mask])
        for view in self.views():
            view._logic.GetSliceCompositeNode().SetLabelVolumeID(label.GetID() if label else None)
            view._logic.GetSliceNode().SetUseLabelOutline(True)
            view.schedule_render()
        if auto_mask is not None:
            disp = auto_mask.segmentation.GetDisplayNode()
            disp.SetVisibility(s.mask == AUTO_MASK)
            disp.SetOpacity2DFill(0.0)
            disp.SetOpacity2DOutline(1.0)

    def _report_positions(self) -> None:
        """Where the slice views are (mm), shown under them and read by the tests."""
        parts = []
        for view in self.views():
            node = view._logic.GetSliceNode()
            parts.append(f"{node.GetOrientation()} {node.GetSliceOffset():.1f} mm")
        with self.state:
            self.state.slice_positions = " · ".join(parts)
