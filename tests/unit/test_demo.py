"""`dropflow demo --data F [--target C]`: the column to predict, or a message about F itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropflow_dev.demo import column_to_predict, run_demo

PENGUINS = b"species,island,bill_length_mm,year\nAdelie,Torgersen,39.1,2007\n"


@pytest.fixture
def penguins(tmp_path: Path) -> Path:
    path = tmp_path / "penguins.csv"
    path.write_bytes(PENGUINS)
    return path


def test_a_wrong_target_says_the_column_is_not_in_the_file_and_lists_its_columns(
    penguins, tmp_path, capsys
):
    code = run_demo(penguins, "specie", tmp_path / "home", timeout=5)

    err = capsys.readouterr().err
    assert code == 2
    assert f"column 'specie' is not in {penguins}" in err
    assert "its columns are: species, island, bill_length_mm, year" in err
    assert "dropflow.yaml" not in err  # the user never wrote one
    assert not (tmp_path / "home").exists()  # refused before anything started


def test_without_target_a_file_with_no_target_like_column_asks_for_target(
    penguins, tmp_path, capsys
):
    code = run_demo(penguins, None, tmp_path / "home", timeout=5)

    err = capsys.readouterr().err
    assert code == 2
    assert "its columns are: species, island, bill_length_mm, year" in err
    assert "--target COLUMN" in err and "dropflow.yaml" not in err


def test_without_target_the_column_named_like_a_target_is_predicted(tmp_path):
    path = tmp_path / "d.csv"
    assert column_to_predict(path, b"a,Label,b\n1,x,2\n", None) == "Label"


def test_several_target_like_columns_ask_which(tmp_path):
    with pytest.raises(ValueError, match=r"several columns .*\(class, y\).*--target class"):
        column_to_predict(tmp_path / "d.csv", b"class,a,y\n0,1,1\n", None)


def test_the_given_target_is_predicted_wherever_it_is(penguins):
    assert column_to_predict(penguins, PENGUINS, "species") == "species"
