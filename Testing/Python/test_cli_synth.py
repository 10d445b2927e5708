"""The command line: synth writes a cohort; bad arguments give one line, exit 2, nothing written."""
import subprocess
import sys

import pytest

from liverstiffness.cli.main import main
from liverstiffness.manifest import read_manifest


def test_synth_writes_manifest(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--n", "2", "--seed", "3", "--sites", "D,E", "--quiet"]) == 0
    recs = read_manifest(tmp_path / "c" / "manifest.csv")
    assert {r.site for r in recs} <= {"D", "E"} and recs[0].site == "D"
    assert recs[0].dwi_b == (50.0, 400.0, 800.0)  # site D's three b-values


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n: must be at least 1"),
    (["--n", "2", "--sites", "A,Q"], "--sites: unknown site(s) Q"),
])
def test_synth_bad_arguments(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["synth", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}")
    assert len(err.splitlines()) == 1 and not out.exists()


def test_bad_input_from_the_shell_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "liverstiffness", "synth", "--out", str(tmp_path / "x"), "--n", "-3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_manifest_errors_name_row_and_column(tmp_path, small_cohort):
    from liverstiffness.errors import InputError
    manifest = small_cohort[0]
    text = manifest.read_text().splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    cases = {"age": ("age", "-4", "age"), "sex": ("sex", "X", "sex"), "stiffness_kpa": ("stiffness_kpa", "80", "stiffness_kpa"),
             "t1w": ("t1w", "nope.nii.gz", "not found")}
    for col, (name, value, expect) in cases.items():
        bad = list(row)
        bad[header.index(name)] = value
        p = manifest.parent / f"bad_{col}.csv"
        p.write_text("\n".join([text[0], ",".join(bad)]) + "\n")
        with pytest.raises(InputError, match=f"bad_{col}.csv line 2.*{expect}"):
            read_manifest(p)


def test_relative_output_folder_gives_paths_relative_to_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "rel/cohort", "--n", "1", "--seed", "4", "--quiet"]) == 0
    text = (tmp_path / "rel" / "cohort" / "manifest.csv").read_text()
    assert "rel/cohort" not in text                    # stored relative to the CSV's folder
    monkeypatch.chdir("/")
    rec = read_manifest(tmp_path / "rel" / "cohort" / "manifest.csv")[0]
    assert rec.t1w.is_file()
