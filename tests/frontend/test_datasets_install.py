"""The wheel carries every task's bundled data, so a non-editable install trains with no other files."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ["sentiment/yelp_labelled.txt", "timeseries/airline-passengers.csv", "pos/en_ewt-ud-dev.conllu.xz",
           "pos/en_ewt-ud-test.conllu.xz", "pos/en_ewt-ud-train.subset.conllu.xz", "pos/LICENSE.txt",
           "text/input.txt.xz", "translation/spa-eng.first40000.txt.xz", "translation/_about.txt"]


@pytest.mark.slow
def test_the_wheel_ships_the_compressed_task_data_with_sources(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("rnnbackends-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in SHIPPED:
        assert f"rnnbackends/datasets/{path}" in names, path
    for folder in ("sentiment", "timeseries", "pos", "text", "translation"):
        assert f"rnnbackends/datasets/{folder}/SOURCE.md" in names
    assert "rnnbackends/datasets/remote.py" in names and "rnnbackends/cli/data.py" in names
    text_data = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist()
                    if i.filename.startswith("rnnbackends/datasets/") and "/speech/" not in i.filename)
    assert text_data < 3_000_000                                  # the five text tasks' data: a few MB
