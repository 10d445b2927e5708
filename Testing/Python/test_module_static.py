"""What can be checked of the Qt module without the Slicer application: it compiles, every
widget it uses exists in the .ui file, and the extension's build files name what exists."""
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "LiverStiffness" / "LiverStiffness.py"
UI = ROOT / "LiverStiffness" / "Resources" / "UI" / "LiverStiffness.ui"


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE), cfile=str(tmp_path / "m.pyc"), doraise=True)


def test_every_widget_the_code_uses_is_in_the_ui_file():
    names = {w.get("name") for w in ET.parse(UI).getroot().iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    assert used, "the module uses no widget?"
    assert used <= names, f"missing in {UI.name}: {sorted(used - names)}"


def test_ui_widgets_have_known_classes_and_the_four_module_classes_exist():
    known = {"qMRMLWidget", "ctkCollapsibleButton", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "ctkPathLineEdit",
             "ctkSliderWidget", "QLabel", "QLineEdit", "QSpinBox", "QDoubleSpinBox", "QComboBox", "QTextBrowser",
             "QPushButton", "QProgressBar", "QCheckBox", "QListWidget"}
    classes = {w.get("class") for w in ET.parse(UI).getroot().iter("widget")}
    assert classes <= known, classes - known
    text = MODULE.read_text()
    for cls in ("class LiverStiffness(ScriptedLoadableModule)", "class LiverStiffnessWidget(", "class LiverStiffnessTest(",
                "@parameterNodeWrapper"):
        assert cls in text


def test_extension_files_reference_existing_paths():
    top = (ROOT / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in top and "add_subdirectory(LiverStiffness)" in top
    mod = (ROOT / "LiverStiffness" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in mod and "WITH_GENERIC_TESTS" in mod
    for rel in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert (ROOT / "LiverStiffness" / rel.replace("${MODULE_NAME}", "LiverStiffness")).is_file()
    s4ext = dict(line.split(" ", 1) for line in (ROOT / "LiverStiffness.s4ext").read_text().splitlines()
                 if line and not line.startswith("#") and " " in line)
    for key in ("scm", "scmurl", "depends", "build_subdirectory", "homepage", "category", "iconurl", "screenshoturls",
                "status", "enabled"):
        assert key in s4ext, key
    assert "slicer_add_python_unittest" in (ROOT / "Testing" / "CMakeLists.txt").read_text()
