"""The stiffness map of a model trained on elastograms in the module's logic, on real MRML nodes
(PyPI slicer-core): a new volume node holding the map's kPa as written, in the elastograms' 0–8
kPa colours, transparent outside the liver; a table of its regional means that says it is a model
estimate; shown as the slice views' foreground with a colour legend. A model without a map
decoder makes none of these. The inputs are untouched."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # PyPI slicer-core: a missing one must fail, not skip

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "LiverStiffness"))
from test_slicer_logic import exam_nodes, matrix  # noqa: E402

from liverstiffness.errors import InputError  # noqa: E402
from LiverStiffnessLib.logic import REGION_COLUMNS, STIFFNESS_MAP_COLOR_NAME, WHOLE_LIVER, LiverStiffnessLogic  # noqa: E402


def snapshot(nodes) -> dict:
    return {n.GetName(): (slicer.util.arrayFromVolume(n).copy(), matrix(n)) for n in (nodes.t1w, nodes.t2w, nodes.dwi)}


def assert_unchanged(scene, before: dict) -> None:
    for name, (arr, mat) in before.items():
        node = scene.GetFirstNodeByName(name)
        assert np.array_equal(slicer.util.arrayFromVolume(node), arr) and np.allclose(matrix(node), mat), name


def table_rows(table) -> dict:
    t = table.GetTable()
    names, kpa = t.GetColumnByName(REGION_COLUMNS[0]), t.GetColumnByName(REGION_COLUMNS[1])
    return {names.GetValue(i): kpa.GetValue(i) for i in range(t.GetNumberOfRows())}


def test_stiffness_map_becomes_a_kpa_volume_in_mre_colours_with_a_regional_table(scene, one_case, tiny_model,
                                                                                 tmp_path, monkeypatch):
    nodes = exam_nodes(scene, one_case)
    before = snapshot(nodes)
    logic = LiverStiffnessLogic(scene)
    result = logic.estimate(nodes, tiny_model, "cpu", tmp_path / "run", maps="none")
    assert_unchanged(scene, before)
    report = result.report
    assert report.stiffness_map and report.outputs["stiffness_map"] == "stiffness_map.nii.gz"

    # The volume: the file's values exactly, on the T1w's geometry, named after it.
    node = result.stiffness_map
    assert node.GetName() == "T1w stiffness map (kPa)" and node.IsA("vtkMRMLScalarVolumeNode")
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(result.output_dir / "stiffness_map.nii.gz")))
    arr = slicer.util.arrayFromVolume(node)
    assert arr.dtype == np.float32 and np.array_equal(arr, written)
    assert np.allclose(matrix(node), matrix(nodes.t1w)) and arr.shape == slicer.util.arrayFromVolume(nodes.t1w).shape
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    assert (arr[~liver] == 0).all() and (arr[liver] > 0).mean() > 0.95
    assert "not a measurement" in node.GetDescription() and node.GetVoxelValueUnits().GetCodeValue() == "kPa"

    # Its display: the 0–8 kPa jet colour table, transparent at 0 (outside the liver).
    disp = node.GetDisplayNode()
    colors = disp.GetColorNode()
    assert colors.GetName() == STIFFNESS_MAP_COLOR_NAME and colors.GetNumberOfColors() == 256
    assert (disp.GetWindowLevelMin(), disp.GetWindowLevelMax()) == (0.0, 8.0) and not disp.GetAutoWindowLevel()
    rgba = np.zeros(4)
    colors.GetColor(0, rgba)
    assert rgba[3] == 0.0                                           # 0 kPa: not drawn
    colors.GetColor(1, rgba)
    assert rgba[3] == 1.0 and rgba[2] > 0.5 and rgba[0] == 0.0       # soft: blue
    colors.GetColor(255, rgba)
    assert rgba[3] == 1.0 and rgba[0] >= 0.5 and rgba[2] == 0.0      # 8 kPa and above: red
    assert disp.GetApplyThreshold() and 0 < disp.GetLowerThreshold() < arr[arr > 0].min()
    assert logic.stiffness_map_color_node() is colors               # one colour table per scene

    # The table: the whole liver and the report's regions, with the report's values, and the note.
    table = result.stiffness_regions
    assert table.GetName() == "T1w stiffness map regions (kPa)"
    rows = table_rows(table)
    summary = report.stiffness_map
    assert list(rows) == [WHOLE_LIVER, *summary["regions_kpa"]] and {"right lobe", "left lobe"} <= set(rows)
    assert rows.pop(WHOLE_LIVER) == pytest.approx(summary["liver_mean_kpa"])
    assert rows == pytest.approx(summary["regions_kpa"])
    assert summary["note"] in table.GetDescription() and "not a measurement" in table.GetColumnTitle(REGION_COLUMNS[1])
    assert json.loads((result.output_dir / "report.json").read_text())["stiffness_map"]["regions_kpa"] == \
        summary["regions_kpa"]                                      # the report itself is untouched

    # Shown: the map over the T1w in every slice view, with its colour legend (made once).
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    legend = logic.show_stiffness_map(result, nodes.t1w, opacity=0.6)
    for view in views:
        assert view.GetForegroundVolumeID() == node.GetID() and view.GetBackgroundVolumeID() == nodes.t1w.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.6)
    assert legend is not None and legend.IsA("vtkMRMLColorLegendDisplayNode") and "kPa" in legend.GetTitleText()
    assert legend.GetPrimaryDisplayNode() is disp and legend.GetVisibility()
    assert logic.show_stiffness_map(result) is legend and views[0].GetBackgroundVolumeID() == nodes.t1w.GetID()
    assert "not a measurement" in logic.stiffness_map_text(report)
    # A Slicer without colour legends: the map is still shown, and the text gives the scale instead.
    monkeypatch.delattr(slicer, "vtkMRMLColorLegendDisplayNode")
    assert logic.show_stiffness_map(result, nodes.t1w) is None
    assert "blue 0 kPa to red 8 kPa" in logic.stiffness_map_text(report, legend=False)
    assert_unchanged(scene, before)


@pytest.mark.slow
def test_a_model_without_a_map_decoder_makes_no_map_nodes(scene, one_case, model_without_maps, tmp_path):
    model = model_without_maps
    nodes = exam_nodes(scene, one_case)
    before = snapshot(nodes)
    logic = LiverStiffnessLogic(scene)
    result = logic.estimate(nodes, model, "cpu", tmp_path / "run", maps="none")
    assert result.report.stiffness_map is None and "stiffness_map" not in result.report.outputs
    assert result.stiffness_map is None and result.stiffness_regions is None
    names = [scene.GetNthNode(i).GetName() or "" for i in range(scene.GetNumberOfNodes())]
    assert not [n for n in names if "stiffness map" in n]            # no volume, table or colour table
    assert scene.GetFirstNodeByName(STIFFNESS_MAP_COLOR_NAME) is None
    assert result.attention["rollout"].GetName() == "T1w stiffness attention"   # the rest as before
    with pytest.raises(InputError, match="no map decoder"):
        logic.show_stiffness_map(result, nodes.t1w)
    assert "no stiffness map" in logic.stiffness_map_text(result.report)
    assert_unchanged(scene, before)
