"""`features_array`: a request's features against the model, before any library sees them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import MAX_ROWS, MAX_VALUES, InputMismatch, features_array

ROWS = {"input_kind": "rows", "n_features": 3}
SEQUENCES = {"input_kind": "sequences", "n_features": 2}


def refused(description: dict, features: object) -> InputMismatch:
    with pytest.raises(InputMismatch) as caught:
        features_array(description, features)
    error = caught.value
    assert error.status == 422
    assert error.code == "input_mismatch"
    assert {"expected", "received"} <= set(error.details)
    return error


# -- rows (tree models) ----------------------------------------------------------------


def test_rows_become_float64():
    array = features_array(ROWS, [[1, 2.5, -3], [0, 0, 1e10]])
    assert array.dtype == np.float64
    assert array.shape == (2, 3)
    assert array[0].tolist() == [1.0, 2.5, -3.0]


def test_nan_is_a_missing_value_for_trees():
    array = features_array(ROWS, [[float("nan"), 1, 2]])
    assert math.isnan(array[0, 0])


def test_width_is_free_when_the_model_does_not_say():
    assert features_array({"type": "xgboost"}, [[1, 2, 3, 4]]).shape == (1, 4)


def test_a_flat_row_is_refused_with_the_fix():
    error = refused(ROWS, [1, 2, 3])
    assert "[[1, 2, 3]]" in error.message


@pytest.mark.parametrize(
    ("features", "where"),
    [
        ([[1, 2, 3], [1, 2]], "features[1]"),
        ([[1, "2", 3]], "features[0][1]"),
        ([[1, 2, True]], "features[0][2]"),
        ([[None, 2, 3]], "features[0][0]"),
        ([[1, [2], 3]], "features[0][1]"),
        ([[1, 2, 3], []], "features[1]"),
        ([[1, 2, math.inf]], "features[0][2]"),
        ([[1, -math.inf, 3]], "features[0][1]"),
        ([[1, 2, 3], {"a": 1}], "features[1]"),
    ],
)
def test_bad_values_are_located(features: list, where: str):
    assert refused(ROWS, features).details["at"] == where


def test_a_bad_value_deep_in_a_large_request_is_located():
    rows = [[0.5, 1, 2]] * (MAX_ROWS - 1)
    assert refused(ROWS, [*rows, [0.5, 1, math.inf]]).details["at"] == f"features[{MAX_ROWS - 1}][2]"
    assert refused(ROWS, [*rows, [0.5, True, 2]]).details["at"] == f"features[{MAX_ROWS - 1}][1]"
    assert features_array(ROWS, [*rows, [math.nan, 1, 2]]).shape == (MAX_ROWS, 3)


def test_strings_and_bools_are_not_numbers():
    assert refused(ROWS, [["1", 2, 3]]).details["received"] == "a string"
    assert refused(ROWS, [[False, 2, 3]]).details["received"] == "a boolean"


@pytest.mark.parametrize("features", [[], [[]], None, "1,2,3", {"rows": [[1, 2, 3]]}, 5])
def test_empty_or_not_a_list_is_refused(features: object):
    refused(ROWS, features)


def test_width_must_match_the_model():
    error = refused(ROWS, [[1, 2, 3, 4]])
    assert error.details == {"expected": "rows of 3 values", "received": "rows of 4 values"}


def test_too_many_rows_or_numbers():
    assert str(MAX_ROWS) in refused({"input_kind": "rows"}, [[1]] * (MAX_ROWS + 1)).message
    wide = [[0.5] * 1000] * (MAX_VALUES // 1000 + 1)
    assert str(MAX_VALUES) in refused({"input_kind": "rows"}, wide).message
    assert features_array({"input_kind": "rows"}, [[1]] * MAX_ROWS).shape == (MAX_ROWS, 1)


def test_integers_beyond_float_range_are_refused():
    refused(ROWS, [[10**400, 1, 2]])


def test_numpy_input_follows_the_same_rules():
    assert features_array(ROWS, np.ones((2, 3), dtype=np.float32)).dtype == np.float64
    refused(ROWS, np.ones((2, 3), dtype=bool))
    refused(ROWS, np.ones(3))


# -- sequences (LSTM) ------------------------------------------------------------------


def test_one_sequence_becomes_a_batch_of_one():
    array = features_array(SEQUENCES, [[1, 2], [3, 4], [5, 6]])
    assert array.dtype == np.float32
    assert array.shape == (1, 3, 2)


def test_a_batch_of_sequences():
    assert features_array(SEQUENCES, [[[1, 2]] * 4] * 3).shape == (3, 4, 2)


def test_nan_is_refused_for_sequences():
    error = refused(SEQUENCES, [[1, 2], [float("nan"), 4]])
    assert error.details["at"] == "features[1][0]"


@pytest.mark.parametrize(
    ("features", "where"),
    [
        ([[[1, 2], [3, 4]], [[1, 2]]], "features[1]"),  # sequences of different lengths
        ([[[1, 2], [3, 4]], [[1, 2], [3]]], "features[1][1]"),  # ragged time steps
        ([[1, 2], [3, "4"]], "features[1][1]"),
        ([[1, 2], [True, 4]], "features[1][0]"),
        ([[1, math.inf]], "features[0][1]"),
        ([[[1, 2]], []], "features[1]"),
    ],
)
def test_bad_sequences_are_located(features: list, where: str):
    assert refused(SEQUENCES, features).details["at"] == where


@pytest.mark.parametrize("features", [[], [[]], [[[]]], [1, 2], "x"])
def test_empty_or_flat_sequences_are_refused(features: object):
    refused(SEQUENCES, features)


def test_sequence_width_must_match():
    error = refused(SEQUENCES, [[1, 2, 3]])
    assert error.details["expected"] == "(time, 2) or (batch, time, 2)"


def test_sequence_length_is_free_unless_fixed():
    trained_on = {**SEQUENCES, "sequence_length": 3}
    assert features_array(trained_on, [[1, 2]] * 5).shape == (1, 5, 2)
    fixed = {**trained_on, "fixed_sequence_length": True}
    assert features_array(fixed, [[1, 2]] * 3).shape == (1, 3, 2)
    assert "exactly 3 time steps" in refused(fixed, [[1, 2]] * 5).message


def test_values_beyond_float32_are_refused():
    refused(SEQUENCES, [[1e300, 1]])


def test_too_many_sequences_or_numbers():
    assert str(MAX_ROWS) in refused({"input_kind": "sequences"}, [[[1]]] * (MAX_ROWS + 1)).message
    big = [[[0.5] * 100] * 1000] * 11
    assert str(MAX_VALUES) in refused({"input_kind": "sequences"}, big).message
