"""Reading a model's dataset: target and task choice, and errors that point at the cell."""

from __future__ import annotations

import io
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dropflow.errors import UserInputError
from dropflow.vocabulary.card import MISSING_CATEGORY, Feature
from dropflow.vocabulary.spec import Spec, load_spec
from tests.unit.fakes import MemoryStore
from training import data as data_module
from training.data import Column, Dataset, load_dataset
from training.examples import split
from training.reading import ReadMeter

MODEL = "m"


def store_with(files: dict[str, bytes]) -> MemoryStore:
    store = MemoryStore()
    for name, data in files.items():
        store.put(f"datasets/{MODEL}/{name}", data)
    return store


def load(files: dict[str, bytes], spec: str | None = None) -> Dataset:
    return load_dataset(store_with(files), MODEL, load_spec(spec))


def parquet(frame: pd.DataFrame, **options) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()


@pytest.fixture
def small_blocks(monkeypatch):
    """Read CSV files in blocks of a few rows, as a large file is read."""
    monkeypatch.setattr(data_module, "_CSV_BLOCK_BYTES", 64)
    monkeypatch.setattr(data_module, "_BLOCK_ROWS", 3)


def error_of(files: dict[str, bytes], spec: str | None = None) -> str:
    with pytest.raises(UserInputError) as caught:
        load(files, spec)
    return str(caught.value)


# --------------------------------------------------------------------------- target and task
def test_a_column_named_target_is_the_target_wherever_it_is():
    data = load({"d.csv": b"target,a,b\n0,1,2\n1,3,4\n"})
    assert data.target == "target"
    assert data.features == ["a", "b"]


def test_a_column_named_label_in_any_case_is_the_target():
    data = load({"d.csv": b"a,Label,b\n1,x,2\n3,y,4\n"})
    assert data.target == "Label"
    assert data.features == ["a", "b"]


def test_without_a_target_like_name_the_job_fails_listing_the_columns_and_the_spec_line():
    # A penguins export: the label is first, and the last column is not a label at all.
    message = error_of({"d.csv": b"species,bill,year\nAdelie,39.1,2007\nGentoo,46.1,2008\n"})
    assert "available columns: species, bill, year" in message
    assert "`target: <column>`" in message and "datasets/m/dropflow.yaml" in message
    assert "`target: species`" in message


def test_two_target_like_names_fail_naming_both():
    message = error_of({"d.csv": b"class,a,y\n0,1,1\n1,3,0\n"})
    assert "'class', 'y'" in message and "`target: class`" in message


def test_the_spec_names_the_target_and_the_features():
    data = load({"d.csv": b"a,b,c,y\n1,2,3,0\n4,5,6,1\n"}, "target: a\nfeatures: [c, b]")
    assert data.target == "a"
    assert data.features == ["c", "b"]
    assert data.x.tolist() == [[3.0, 2.0], [6.0, 5.0]]


def test_an_unknown_target_names_it_and_the_available_columns():
    message = error_of({"d.csv": b"a,b\n1,2\n"}, "target: price")
    assert "'price'" in message
    assert "available columns: a, b" in message


def test_an_unknown_feature_names_it_and_the_available_columns():
    message = error_of({"d.csv": b"a,b\n1,2\n"}, "target: b\nfeatures: [size]")
    assert "'size'" in message and "available columns: a, b" in message


def test_text_labels_make_a_classification_with_sorted_string_classes():
    data = load({"d.csv": b"x,diagnosis\n1,malignant\n2,benign\n3,benign\n"}, "target: diagnosis")
    assert data.task == "classification"
    assert data.classes == ["benign", "malignant"]
    assert data.y.tolist() == [1, 0, 0]


def test_few_whole_numbers_make_a_classification_with_int_classes():
    data = load({"d.csv": b"x,y\n1,3\n2,1\n3,3\n"})
    assert data.task == "classification"
    assert data.classes == [1, 3]
    assert all(type(c) is int for c in data.classes)


def test_true_false_labels_are_booleans():
    data = load({"d.csv": b"x,y\n1,True\n2,false\n"})
    assert data.task == "classification"
    assert data.classes == [False, True]


def test_many_distinct_whole_numbers_make_a_regression():
    rows = "".join(f"{i},{i * 7}\n" for i in range(30))
    data = load({"d.csv": ("x,y\n" + rows).encode()})
    assert data.task == "regression"
    assert data.classes is None
    assert data.y.dtype == np.float64


def test_decimal_numbers_make_a_regression():
    data = load({"d.csv": b"x,y\n1,0.5\n2,1.5\n"})
    assert data.task == "regression"


def test_the_spec_task_overrides_the_inference():
    data = load({"d.csv": b"x,y\n1,1\n2,2\n"}, "task: regression")
    assert data.task == "regression"
    assert data.y.tolist() == [1.0, 2.0]


def test_a_text_target_cannot_be_a_regression():
    message = error_of({"d.csv": b"x,y\n1,2.5\n2,high\n"}, "task: regression")
    assert "datasets/m/d.csv, line 3, column 'y': 'high' is not a number" in message


def test_a_target_with_one_value_cannot_be_classified():
    assert "at least two classes" in error_of({"d.csv": b"x,y\n1,a\n2,a\n"})


def test_rows_without_a_target_are_dropped():
    data = load({"d.csv": b"x,y\n1,a\n2,\n3,b\n4,NA\n"})
    assert data.dropped_rows == 2
    assert data.x[:, 0].tolist() == [1.0, 3.0]


# --------------------------------------------------------------------------- cells and files
def test_a_broken_cell_names_file_line_and_column():
    csv = b"a,b,target\n1,2,x\n3,4,y\n5,oops,x\n"
    message = error_of({"data.csv": csv})
    assert "datasets/m/data.csv, line 4, column 'b': 'oops' is not a number" in message
    assert "the column is numeric (2 of its 3 values are numbers)" in message


def test_a_broken_cell_is_found_in_a_later_file():
    message = error_of({"1.csv": b"a,target\n1,x\n2,y\n", "2.csv": b"a,target\n3,x\n4.4.4,y\n"})
    assert "datasets/m/2.csv, line 3, column 'a': '4.4.4'" in message


def test_an_infinite_feature_value_is_rejected():
    message = error_of({"d.csv": b"a,target\ninf,x\n2,y\n"})
    assert "line 2, column 'a': 'inf' is not a finite number" in message


def test_a_number_too_large_for_float32_is_rejected():
    message = error_of({"d.csv": b"a,target\n1,x\n1e39,y\n"})
    assert "line 3, column 'a': '1e39' is not a finite number" in message


def test_missing_numbers_are_nan():
    data = load({"d.csv": b"a,target\n1,x\n,y\nn/a,x\n4,y\n"})
    assert np.isnan(data.x[1, 0]) and np.isnan(data.x[2, 0])
    assert data.card_features()[0] == Feature(name="a", dtype="number", nullable=True)


def test_a_column_with_no_value_is_named():
    message = error_of({"d.csv": b"a,b,target\n1,,x\n2,NA,y\n"})
    assert message.startswith("column 'b' has no values")
    assert "features:" in message  # says how to leave it out


# --------------------------------------------------------------------------- categories
def test_a_text_column_is_categorical_with_sorted_categories_and_codes():
    data = load({"d.csv": b"size,color,target\n1,red,x\n2,blue,y\n3,red,x\n4,green,y\n"})
    assert data.features == ["size", "color"]
    assert data.columns[1] == Column("color", "category", ("blue", "green", "red"))
    assert data.x[:, 1].tolist() == [2.0, 0.0, 2.0, 1.0]
    assert data.category_counts == {1: 3}
    assert data.card_features()[1] == Feature(
        name="color", dtype="category", categories=["blue", "green", "red"], nullable=False
    )


def test_true_and_false_in_any_case_are_boolean_categories():
    data = load({"d.csv": b"flag,target\nTrue,x\nfalse,y\nTRUE,x\n"})
    assert data.columns[0].categories == (False, True)
    assert data.x[:, 0].tolist() == [1.0, 0.0, 1.0]


def test_missing_categories_become_the_reserved_category_listed_last():
    data = load({"d.csv": b"color,target\nred,x\n,y\nblue,x\nNA,y\n"})
    assert data.columns[0].categories == ("blue", "red", MISSING_CATEGORY)
    assert data.x[:, 0].tolist() == [1.0, 2.0, 0.0, 2.0]
    assert data.card_features()[0].nullable is True


def test_a_real_value_spelled_like_the_reserved_category_is_refused_with_missing_values():
    message = error_of({"d.csv": b"color,target\nred,x\n<missing>,y\n,x\nred,y\n"})
    assert "column 'color'" in message and "'<missing>'" in message


def test_numbers_in_a_mostly_text_column_are_categories_too():
    data = load({"d.csv": b"grade,target\nA,x\nB,y\n3,x\nA,y\n"})
    assert data.columns[0].categories == ("3", "A", "B")


def test_half_numbers_is_still_a_numeric_column():
    # Only a majority of non-numbers makes a category: a typo cannot flip a column.
    message = error_of({"d.csv": b"a,target\n1,x\nfoo,y\n"})
    assert "line 3, column 'a': 'foo' is not a number" in message


def test_a_stray_word_in_a_later_parquet_file_names_its_row():
    first = b"a,target\n1,x\n2,y\n3,x\n"
    second = parquet(pd.DataFrame({"a": ["4", "five"], "target": ["y", "x"]}))
    message = error_of({"1.csv": first, "2.parquet": second})
    assert "datasets/m/2.parquet, row 2, column 'a': 'five' is not a number" in message


def test_parquet_booleans_are_categories_and_csv_text_joins_parquet_text():
    first = b"flag,color,target\ntrue,red,x\nfalse,blue,y\n"
    second = parquet(
        pd.DataFrame({"flag": [True, None], "color": ["red", "green"], "target": ["x", "y"]})
    )
    data = load({"a.csv": first, "b.parquet": second})
    assert data.columns[0].categories == (False, True, MISSING_CATEGORY)
    assert data.x[:, 0].tolist() == [1.0, 0.0, 1.0, 2.0]
    assert data.columns[1].categories == ("blue", "green", "red")
    assert data.x[:, 1].tolist() == [2.0, 0.0, 2.0, 1.0]


def test_a_parquet_boolean_column_is_categorical_even_when_it_looks_numeric():
    frame = pd.DataFrame({"flag": [True, False, True], "target": ["x", "y", "x"]})
    data = load({"d.parquet": parquet(frame)})
    assert data.columns[0].kind == "category"


def test_a_parquet_category_column_is_categorical():
    frame = pd.DataFrame({"c": pd.Categorical(["lo", "hi", "lo"]), "target": ["x", "y", "x"]})
    data = load({"d.parquet": parquet(frame)})
    assert data.columns[0].categories == ("hi", "lo")


def test_a_column_with_a_different_value_in_every_row_is_refused():
    rows = "".join(f"{i},name-{i},{'xy'[i % 2]}\n" for i in range(25))
    message = error_of({"d.csv": ("a,name,target\n" + rows).encode()})
    assert message.startswith("column 'name' has a different value in each of its 25 rows")
    assert "features:" in message


def test_too_many_categories_are_refused(monkeypatch):
    monkeypatch.setattr(data_module, "MAX_CATEGORIES", 2)
    message = error_of({"d.csv": b"c,target\na,x\nb,y\nc,x\na,y\n"})
    assert message.startswith("column 'c' has 3 distinct values, more than the 2 categories")


def test_files_with_different_columns_name_the_odd_file():
    message = error_of({"1.csv": b"a,b,target\n1,2,x\n", "2.csv": b"a,c,target\n1,2,y\n"})
    assert message.startswith("datasets/m/2.csv: its columns differ from datasets/m/1.csv")
    assert "missing 'b'" in message and "unexpected 'c'" in message


def test_csv_and_parquet_are_read_together_in_key_order():
    first = b"a,b,label\n1,2,0\n3,4,1\n"
    second = parquet(pd.DataFrame({"label": [1, 0], "a": [5.0, 7.0], "b": [6, 8]}))
    data = load({"a.csv": first, "b.parquet": second})
    assert data.sources == ["datasets/m/a.csv", "datasets/m/b.parquet"]
    assert data.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    # "1" in the CSV and 1 in the Parquet file are the same class.
    assert data.classes == [0, 1]
    assert data.y.tolist() == [0, 1, 1, 0]


def test_a_broken_parquet_cell_names_the_row():
    frame = pd.DataFrame({"a": ["1", "2", "x"], "target": ["p", "q", "p"]})
    message = error_of({"d.parquet": parquet(frame)})
    assert "datasets/m/d.parquet, row 3, column 'a': 'x' is not a number" in message


def test_other_files_under_the_prefix_are_not_data():
    data = load({"d.csv": b"a,target\n1,x\n2,y\n", "README.md": b"# notes", "dropflow.yaml": b""})
    assert data.sources == ["datasets/m/d.csv"]


def test_no_data_files_is_an_error_naming_the_prefix():
    with pytest.raises(UserInputError, match=r"no \.csv or \.parquet files under datasets/m/"):
        load_dataset(MemoryStore(), MODEL, Spec())


def test_an_empty_csv_file_is_named():
    assert error_of({"d.csv": b""}).startswith("datasets/m/d.csv: the file is empty")


def test_a_damaged_parquet_file_is_named():
    assert error_of({"d.parquet": b"PAR1 not really"}).startswith(
        "datasets/m/d.parquet: not a readable Parquet file"
    )


# --------------------------------------------------------------------------- rows cut short
IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"
IRIS_ROWS = [
    "5.1,3.5,1.4,0.2,setosa",
    "7.0,3.2,4.7,1.4,versicolor",
    "6.3,3.3,6.0,2.5,virginica",
    "4.9,3.0,1.4,0.2,setosa",
    "6.4,3.2,4.5,1.5,versicolor",
    "5.8,2.7,5.1,1.9,virginica",
]


# An iris export names its label `species`, so the spec says which column it is.
IRIS_SPEC = "target: species"


def iris(*lines: str, end: str = "\n") -> bytes:
    return ("\n".join([IRIS_HEADER, *IRIS_ROWS, *lines]) + end).encode()


def test_a_last_line_cut_mid_row_names_file_and_line_and_says_the_upload_was_cut():
    message = error_of({"part-2.csv": iris("5.9,3.0,5", end="")}, IRIS_SPEC)

    assert message == (
        "datasets/m/part-2.csv, line 8: 3 fields, the header has 5; the file may have been cut "
        "off mid-upload: upload it again"
    )


def test_a_last_line_cut_inside_quotes_is_a_short_row_too():
    message = error_of({"d.csv": iris('5.9,"3.0', end="")}, IRIS_SPEC)

    assert message.startswith("datasets/m/d.csv, line 8: 2 fields, the header has 5;")
    assert "cut off mid-upload" in message


def test_a_short_row_inside_the_file_is_named_without_blaming_the_upload():
    message = error_of({"d.csv": iris("5.9,3.0,5.1,1.8", "6.1,2.8,4.7,1.2,versicolor")}, IRIS_SPEC)

    assert message.startswith("datasets/m/d.csv, line 8: 4 fields, the header has 5;")
    assert "every row needs one value per column" in message
    assert "upload" not in message


def test_a_row_with_too_many_fields_is_named_with_a_hint_about_quoting():
    message = error_of({"d.csv": iris("5.9,3.0,5.1,1.8,virginica,extra")}, IRIS_SPEC)

    assert message.startswith("datasets/m/d.csv, line 8: 6 fields, the header has 5;")
    assert "must be quoted" in message


def test_too_many_fields_on_the_first_row_is_not_taken_for_an_index_column():
    message = error_of({"d.csv": b"a,b,target\n1,2,3,x\n4,5,y\n6,7,x\n"})

    assert message.startswith("datasets/m/d.csv, line 2: 4 fields, the header has 3;")


def test_a_row_in_a_later_file_is_found_in_that_file():
    message = error_of({"1.csv": iris(), "2.csv": iris("1,2,3")}, IRIS_SPEC)

    assert message.startswith("datasets/m/2.csv, line 8: 3 fields")


def test_quoted_commas_and_line_breaks_are_values_not_fields():
    data = load({"d.csv": b'a,note,target\n1,"x, y",p\n2,"two\nlines",q\n3,z,p\n'})

    assert data.x[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert data.columns[1].categories == ("two\nlines", "x, y", "z")


def test_an_empty_last_cell_is_a_missing_value_not_a_short_row():
    data = load({"d.csv": b"a,b,target\n1,2,x\n3,,y\n4,5,x\n6,7,"})

    assert data.dropped_rows == 1  # the last row has no target
    assert np.isnan(data.x[1, 1])


def test_a_file_that_is_not_utf8_names_the_line():
    message = error_of({"d.csv": b"a,target\n1,x\n2,caf\xe9\n"})

    assert message.startswith("datasets/m/d.csv, line 3: not UTF-8 text")


def test_a_class_cut_short_on_the_unterminated_last_line_fails_the_job():
    # The field count is right, so only the value tells: `ver` begins `versicolor`.
    message = error_of({"part-2.csv": iris("5.9,3.0,5.1,1.8,ver", end="")}, IRIS_SPEC)

    assert message == (
        "datasets/m/part-2.csv, line 8, column 'species': 'ver' appears nowhere else and begins "
        "'versicolor'; it is on the file's last line, which has no line end: the file may have "
        "been cut off mid-upload, so upload it again"
    )


def test_a_category_cut_short_on_the_unterminated_last_line_fails_the_job():
    csv = b"colour,target\nred,x\ngreen,y\nred,x\ngreen,y\ngre"
    message = error_of({"d.csv": csv + b",x"})

    assert "line 6, column 'colour': 'gre' appears nowhere else and begins 'green'" in message


def test_a_number_cut_into_text_on_the_unterminated_last_line_says_the_upload_was_cut():
    message = error_of({"d.csv": iris("5.9,3.0,5.1,ver,virginica", end="")}, IRIS_SPEC)

    assert "line 8, column 'petal_width': 'ver' is not a number" in message
    assert message.endswith("the file may have been cut off mid-upload, so upload it again")


def test_a_rare_class_on_a_terminated_last_line_is_a_class():
    data = load({"d.csv": iris("5.9,3.0,5.1,1.8,ver")}, IRIS_SPEC)

    assert data.classes == ["setosa", "ver", "versicolor", "virginica"]


def test_a_last_line_without_line_end_whose_class_is_known_is_kept():
    data = load({"d.csv": iris("5.9,3.0,5.1,1.8,virginica", end="")}, IRIS_SPEC)

    assert data.classes == ["setosa", "versicolor", "virginica"]
    assert len(data.y) == len(IRIS_ROWS) + 1


# --------------------------------------------------------------------------- reading at scale
def test_the_matrix_is_float32_and_the_examples_carry_that_same_matrix():
    data = load({"d.csv": b"a,b,target\n1,2,x\n3,4,y\n"})

    examples = data.examples()

    assert data.x.dtype == np.float32 and data.x.flags.c_contiguous
    assert examples.x is data.x  # one copy of the features, handed on as it is


def test_a_file_read_in_many_blocks_reads_as_one(small_blocks):
    rows = [
        f"{i},{['red', 'green', 'blue'][i % 3]},{'' if i % 5 == 4 else 'xy'[i % 2]}"
        for i in range(40)
    ]
    data = load({"d.csv": ("n,colour,target\n" + "\n".join(rows) + "\n").encode()})

    kept = [i for i in range(40) if i % 5 != 4]
    assert data.dropped_rows == 8
    assert data.x[:, 0].tolist() == [float(i) for i in kept]
    # Categories sorted over the whole file, whatever block they first appeared in.
    assert data.columns[1].categories == ("blue", "green", "red")
    assert data.x[:, 1].tolist() == [float([2, 1, 0][i % 3]) for i in kept]
    assert data.y.tolist() == [i % 2 for i in kept]


def test_a_broken_cell_in_a_later_block_names_its_line(small_blocks):
    rows = [f"{i},{'xy'[i % 2]}" for i in range(30)]
    rows[23] = "oops,y"
    message = error_of({"d.csv": ("a,target\n" + "\n".join(rows) + "\n").encode()})

    assert "datasets/m/d.csv, line 25, column 'a': 'oops' is not a number" in message


def test_a_short_row_in_a_later_block_names_its_line(small_blocks):
    message = error_of({"d.csv": iris(*IRIS_ROWS, *IRIS_ROWS, "5.9,3.0")}, IRIS_SPEC)

    assert message.startswith("datasets/m/d.csv, line 20: 2 fields, the header has 5;")


def test_a_class_cut_short_at_the_end_of_a_many_block_file_fails_the_job(small_blocks):
    message = error_of(
        {"d.csv": iris(*IRIS_ROWS, *IRIS_ROWS, "5.9,3.0,5.1,1.8,vir", end="")}, IRIS_SPEC
    )

    assert message.startswith("datasets/m/d.csv, line 20, column 'species': 'vir' appears")


def test_parquet_row_groups_read_as_one_and_errors_name_the_row_in_the_file():
    frame = pd.DataFrame(
        {"a": [str(i) for i in range(10)], "c": list("pqrpqrpqrp"), "target": list("xyxyxyxyxy")}
    )
    data = load({"d.parquet": parquet(frame, row_group_size=3)})
    assert data.x[:, 0].tolist() == [float(i) for i in range(10)]
    assert data.columns[1].categories == ("p", "q", "r")
    assert data.x[:, 1].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]

    frame.loc[7, "a"] = "seven"
    message = error_of({"d.parquet": parquet(frame, row_group_size=3)})
    assert "datasets/m/d.parquet, row 8, column 'a': 'seven' is not a number" in message


def test_a_parquet_boolean_column_with_nulls_is_a_category_too():
    # Typed as boolean by the file: a category whatever its values, nulls included.
    frame = pd.DataFrame({"flag": [True, None, False, True], "n": [1.0, 2.0, 3.0, 4.0]})
    frame["target"] = ["x", "y", "x", "y"]
    data = load({"d.parquet": parquet(frame)})

    assert data.columns[0] == Column("flag", "category", (False, True, MISSING_CATEGORY))
    assert data.x[:, 0].tolist() == [1.0, 2.0, 0.0, 1.0]


def test_a_parquet_column_that_is_neither_text_nor_numbers_is_named():
    table = pa.table({"tags": [[1, 2], [3]], "target": ["x", "y"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    message = error_of({"d.parquet": buffer.getvalue()})

    assert message.startswith("datasets/m/d.parquet, column 'tags': values of type list<")
    assert "features:" in message


def test_a_value_cut_short_is_told_even_in_a_column_with_too_many_categories(monkeypatch):
    monkeypatch.setattr(data_module, "MAX_CATEGORIES", 2)
    message = error_of({"d.csv": b"code,target\na,x\nb,y\ncc,x\nd,y\nc,x"})

    assert message.startswith("datasets/m/d.csv, line 6, column 'code': 'c' appears nowhere else")


def test_a_byte_that_is_not_utf8_beyond_the_first_megabyte_names_its_line():
    rows = b"".join(b"%d,x\n" % i for i in range(300_000))  # about 2 MB
    message = error_of({"d.csv": b"a,target\n" + rows + b"1,caf\xe9\n"})

    assert message.startswith("datasets/m/d.csv, line 300002: not UTF-8 text")


def test_the_temporary_copies_are_removed_after_the_read_and_after_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    load({"d.csv": b"a,target\n1,x\n2,y\n"})
    error_of({"d.csv": b"a,target\n1,x\noops,y\n3,x\n"})

    assert list(tmp_path.iterdir()) == []


def test_the_meter_hears_every_row_and_the_whole_read(small_blocks):
    rows = "".join(f"{i},{'xy'[i % 2]}\n" for i in range(50))
    meter = ReadMeter(every=0.0, first=0.0)
    heard = []
    meter.report = heard.append

    load_dataset(store_with({"d.csv": ("a,target\n" + rows).encode()}), MODEL, Spec(), meter=meter)

    assert meter.rows == 50
    assert meter.done == meter.total == 3 * len(("a,target\n" + rows).encode())
    fractions = [progress.fraction for progress in heard]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(heard) > 10  # block by block, not only at the end


def test_a_parquet_file_of_one_row_group_reports_its_progress_column_by_column():
    frame = pd.DataFrame({f"n{j}": [float(i + j) for i in range(20)] for j in range(5)})
    frame["target"] = ["x", "y"] * 10
    data = parquet(frame)
    meter = ReadMeter(every=0.0, first=0.0)
    heard = []
    meter.report = heard.append

    load_dataset(store_with({"d.parquet": data}), MODEL, Spec(), meter=meter)

    # Fetched once, then 6 columns in the first pass and 5 features in the second.
    assert len(heard) >= 1 + 6 + 5
    assert meter.rows == 20 and heard[-1].fraction == pytest.approx(1.0)


# --------------------------------------------------------------------------- split
def classification(n_per_class: int, classes: list) -> Dataset:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(len(classes)), n_per_class)
    x = rng.normal(size=(len(y), 3))
    return Dataset(
        task="classification",
        target="t",
        features=["a", "b", "c"],
        x=x,
        y=y,
        classes=classes,
        sources=[],
        dropped_rows=0,
    )


def test_the_split_is_the_same_for_the_same_seed_and_differs_for_another():
    data = classification(50, ["a", "b"]).examples()
    first, again, other = split(data, 0.2, 0), split(data, 0.2, 0), split(data, 0.2, 1)
    assert np.array_equal(first.x_holdout, again.x_holdout)
    assert not np.array_equal(first.x_holdout, other.x_holdout)


def test_the_split_is_stratified():
    data = classification(50, ["a", "b", "c"])
    parts = split(data.examples(), 0.2, 0)
    assert np.bincount(parts.y_holdout).tolist() == [10, 10, 10]
    assert len(parts.y_train) == 120


def test_the_held_out_rows_do_not_depend_on_how_labels_sort():
    data = classification(40, ["a", "b"])
    relabelled = Dataset(**{**data.__dict__, "y": 1 - data.y, "classes": ["b", "a"]})
    assert np.array_equal(
        split(data.examples(), 0.2, 0).x_holdout, split(relabelled.examples(), 0.2, 0).x_holdout
    )


def test_the_split_keeps_missing_numbers_and_category_codes_for_the_network():
    x = np.column_stack(
        [np.arange(10.0), [1, np.nan, 3, 4, 5, np.nan, 7, 8, 9, 10], np.arange(10) % 3]
    )
    data = Dataset(
        task="regression",
        target="t",
        features=["row", "a", "c"],
        x=x,
        y=np.arange(10.0),
        classes=None,
        sources=[],
        dropped_rows=0,
        columns=(Column("row"), Column("a"), Column("c", "category", ("p", "q", "r"))),
    )
    parts = split(data.examples(), 0.3, 0)
    assert parts.x_train.dtype == parts.x_holdout.dtype == np.float32
    together = np.concatenate([parts.x_train, parts.x_holdout])
    rows = together[:, 0].astype(int)
    # The network fills missing numbers (training.model); the split only moves rows.
    np.testing.assert_array_equal(together, x[rows].astype(np.float32))


def test_too_few_rows_to_hold_out_is_an_error():
    data = classification(1, ["a", "b"])
    with pytest.raises(UserInputError, match="too few rows"):
        split(data.examples(), 0.2, 0)
