"""`dropflow sample <name>`: a packaged dataset as CSV on stdout, ready to drop."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest

from dropflow.errors import DropflowError
from dropflow_dev.cli import main
from dropflow_dev.sample import SAMPLES, UnknownSample, column_name, write_sample


def _table(name: str, **kwargs: str) -> list[dict[str, str]]:
    out = io.StringIO()
    write_sample(name, out, **kwargs)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_iris_has_the_column_names_of_readmes_spec_and_its_species_as_text():
    rows = _table("iris")

    assert list(rows[0]) == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "target",
    ]
    assert len(rows) == 150
    assert rows[0] == {
        "sepal_length": "5.1",
        "sepal_width": "3.5",
        "petal_length": "1.4",
        "petal_width": "0.2",
        "target": "setosa",
    }
    assert {r["target"] for r in rows} == {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize(
    ("name", "rows", "features", "labels"),
    [
        ("wine", 178, 13, {"class_0", "class_1", "class_2"}),
        ("breast-cancer", 569, 30, {"malignant", "benign"}),
    ],
)
def test_each_classification_sample_names_its_classes(name, rows, features, labels):
    table = _table(name)

    assert len(table) == rows
    assert len(table[0]) == features + 1
    assert {r["target"] for r in table} == labels
    assert all(float(v) == float(v) for r in table for k, v in r.items() if k != "target")


def test_the_regression_sample_has_a_numeric_target():
    table = _table("diabetes")

    assert len(table) == 442
    assert float(table[0]["target"]) == 151.0
    assert "bmi" in table[0]


def test_every_sample_named_in_the_help_can_be_written():
    for name in SAMPLES:
        assert _table(name), name


def test_the_label_column_can_be_renamed_for_a_spec():
    rows = _table("iris", target="species")

    assert list(rows[0])[-1] == "species"
    assert rows[-1]["species"] == "virginica"


def test_a_label_name_taken_by_a_feature_is_refused_naming_the_features():
    with pytest.raises(DropflowError, match=r"'petal_width' is also a feature of iris \(sepal"):
        write_sample("iris", io.StringIO(), target="petal_width")


def test_an_unknown_sample_lists_the_samples():
    with pytest.raises(UnknownSample, match="no sample named 'penguins'; the samples are: iris, "):
        write_sample("penguins", io.StringIO())


@pytest.mark.parametrize(
    ("feature", "column"),
    [
        ("sepal length (cm)", "sepal_length"),
        ("od280/od315_of_diluted_wines", "od280_od315_of_diluted_wines"),
        ("mean concave points", "mean_concave_points"),
        ("bmi", "bmi"),
    ],
)
def test_column_names_are_lower_case_words_joined_by_underscores(feature, column):
    assert column_name(feature) == column


def test_the_command_writes_the_csv_to_stdout(capsys):
    assert main(["sample", "iris"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("sepal_length,sepal_width,petal_length,petal_width,target\n5.1,")
    assert out.count("\n") == 151


def test_the_command_refuses_an_unknown_name_listing_the_samples(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "penguins"])

    assert "invalid choice: 'penguins' (choose from 'iris', 'wine'" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_broken_pipe_noise():
    # `dropflow sample breast-cancer | head -1`: head exits after one line.
    done = subprocess.run(
        f"{sys.executable} -m dropflow_dev.cli sample breast-cancer | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.stdout.startswith("mean_radius,mean_texture,")
    assert done.stderr == ""
