"""Draw the extension icon and a mock-up of the module panel (no Slicer application here).

Run: .venv/bin/python recipes/draw_resources.py  (writes Resources/ and LiverStiffness/Resources/Icons/)
The mock-up is laid out from the real .ui file, so it shows the widgets the module has.
"""
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch, Polygon

ROOT = Path(__file__).resolve().parents[1]


def icon(path: Path) -> None:
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    t = np.linspace(0, 2 * np.pi, 200)
    x = 0.5 + 0.38 * np.cos(t) - 0.08 * np.cos(2 * t)
    y = 0.5 + 0.25 * np.sin(t) + 0.06 * np.sin(3 * t)
    ax.add_patch(Polygon(np.c_[x, y], closed=True, color="#8c2d19"))
    for r, c in ((0.16, "#f4a259"), (0.09, "#f9e07f")):
        ax.add_patch(plt.Circle((0.42, 0.52), r, color=c, alpha=0.85))
    ax.text(0.5, 0.1, "kPa", ha="center", va="center", fontsize=16, color="#1d3557", weight="bold")
    fig.savefig(path, transparent=True)
    plt.close(fig)


def panel(path: Path) -> None:
    root = ET.parse(ROOT / "LiverStiffness" / "Resources" / "UI" / "LiverStiffness.ui").getroot()
    sections = [w for w in root.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    fig, ax = plt.subplots(figsize=(5.2, 11))
    ax.set_xlim(0, 10), ax.set_ylim(0, 100), ax.axis("off")
    y = 98
    ax.text(0.2, y, "Liver Stiffness  (Quantification)", fontsize=12, weight="bold")
    y -= 3
    for sec in sections:
        title = sec.find("property/string").text
        ax.add_patch(FancyBboxPatch((0.1, y - 1.6), 9.8, 2.2, boxstyle="round,pad=0.05", fc="#dde3ea", ec="#8896a5"))
        ax.text(0.3, y - 0.8, "▼ " + title, fontsize=9, weight="bold", va="center")
        y -= 3
        for w in sec.iter("widget"):
            if (w is sec or w.get("class") == "QLabel" and w.get("name", "").endswith("Label")
                    and w.get("name") not in ("statusLabel", "resultLabel", "categoryLabel", "deviceInfoLabel")):
                continue
            name, cls = w.get("name"), w.get("class")
            label = next((lw.find("property/string").text for lw in sec.iter("widget") if lw.get("name") == name + "Label"), "")
            text = {"resultLabel": "3.42 kPa   (90% interval 2.9–4.0)",
                    "categoryLabel": "stage 1-2 fibrosis — demo model, not for clinical use",
                    "statusLabel": "Ready.", "deviceInfoLabel": "no CUDA GPU found: CPU"}.get(name, "")
            if cls == "QPushButton":
                ax.add_patch(FancyBboxPatch((0.5, y - 1.2), 9.0, 1.6, boxstyle="round,pad=0.05",
                                            fc="#3a7bd5" if name == "applyButton" else "#f0f0f0", ec="#666"))
                ax.text(5, y - 0.4, w.find("property/string").text, ha="center", va="center", fontsize=8,
                        color="white" if name == "applyButton" else "black")
            elif cls == "QListWidget":
                ax.add_patch(FancyBboxPatch((0.5, y - 3.2), 9.0, 3.6, boxstyle="square,pad=0", fc="white", ec="#666"))
                ax.text(0.7, y - 0.4, "WARNING LEAKS: the mask includes tissue that is not liver ...", fontsize=6.5)
                ax.text(0.7, y - 1.4, "(click a flag to jump to its slice)", fontsize=6.5, color="#666")
                y -= 2.2
            else:
                if label:
                    ax.text(0.5, y - 0.4, label, fontsize=7.5, va="center")
                box_x = 4.0 if label else 0.5
                size = 15 if name == "resultLabel" else 7.5
                ax.add_patch(FancyBboxPatch((box_x, y - 1.0), 9.5 - box_x, 1.3, boxstyle="square,pad=0",
                                            fc="white" if cls != "QLabel" else "none", ec="#999" if cls != "QLabel" else "none"))
                ax.text(box_x + 0.2, y - 0.35,
                        text or {"qMRMLNodeComboBox": "T1w ▾" if "t1w" in name else "select ▾",
                                 "qMRMLSegmentSelectorWidget": "liver seg ▾ / Liver ▾",
                                 "QComboBox": "auto ▾" if "device" in name else "▾", "ctkSliderWidget": "━━━━●━━━━ 0.50",
                                 "QCheckBox": "☑ " + (w.find("property/string").text
                                                      if w.find("property/string") is not None else ""),
                                 "QTextBrowser": "Model card: liverstiffness-vit-demo (synthetic) ..."}.get(cls, ""),
                        fontsize=size if name == "resultLabel" else 7, va="center",
                        weight="bold" if name == "resultLabel" else None)
            y -= 1.9
        y -= 0.6
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    icon(ROOT / "Resources" / "LiverStiffness.png")
    shutil.copy(ROOT / "Resources" / "LiverStiffness.png", ROOT / "LiverStiffness" / "Resources" / "Icons" / "LiverStiffness.png")
    panel(ROOT / "Resources" / "Screenshots" / "panel.png")
    print("wrote the icon and Resources/Screenshots/panel.png")
