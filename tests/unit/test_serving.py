"""The prediction service: input checks against the card, labels, and what it caches."""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from dropflow.errors import InvalidName, NotFoundError, NotReadyError
from dropflow.observability import SERVICE
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog, VersionRecord
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.serving.service import (
    InputSchema,
    InvalidInstances,
    ModelCache,
    NoServableVersion,
    PredictionService,
    available_cpus,
)
from dropflow.vocabulary.card import MISSING_CATEGORY, REJECT, Feature, artifact_key
from dropflow.vocabulary.names import new_job_id
from tests.fakes_serving import Counting, ManualClock, expected_output, publish, version_id
from tests.net import wait_until

FEATURES = ["mean radius", "mean texture", "mean area", "worst smoothness"]
CLASSES = ["benign", "malignant"]
ROWS = [[14.1, 19.3, 654.9, 0.13], [20.6, 17.8, 1326.0, 0.12], [-1.0, 0.0, 2.0, 0.5]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def counted(store, registry) -> tuple[Counting, Counting]:
    return Counting(store), Counting(registry)


@pytest.fixture
def service(counted, clock) -> PredictionService:
    store, registry = counted
    return PredictionService(ModelCache(store, registry, champion_ttl=5.0, clock=clock))


def release(store, registry, model: str, n: int, **kwargs) -> str:
    """Publish version n of `model` and promote it; returns the version id."""
    version = version_id(n)
    publish(store, registry, model, version, **kwargs)
    assert promote(model, version, store, registry).decision == "approved"
    return version


@pytest.fixture
def cancer(store, registry) -> str:
    return release(store, registry, "cancer", 1, features=FEATURES, classes=CLASSES)


# ---------------------------------------------------------------------- answers
def test_list_rows_get_the_original_class_labels(service, store, cancer):
    answer = service.predict("cancer", ROWS)

    probabilities = expected_output(store, "cancer", cancer, np.array(ROWS))
    assert answer["predictions"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert answer["model"] == "cancer"
    assert answer["version"] == cancer
    assert answer["served_by"] == "lambda"


def test_probabilities_are_lists_of_floats_per_row(service, store, cancer):
    answer = service.predict("cancer", ROWS)

    expected = expected_output(store, "cancer", cancer, np.array(ROWS))
    assert len(answer["probabilities"]) == len(ROWS)
    assert all(type(p) is float for row in answer["probabilities"] for p in row)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)


def test_integer_class_values_come_back_as_integers(service, store, registry):
    release(store, registry, "digits", 1, n_features=3, classes=[2, 4, 8])

    answer = service.predict("digits", [[1, 2, 3], [0, 0, 0]])

    assert all(label in (2, 4, 8) and type(label) is int for label in answer["predictions"])


def test_object_rows_match_list_rows_whatever_the_key_order(service, cancer):
    objects = [dict(reversed(list(zip(FEATURES, row, strict=True)))) for row in ROWS]

    assert service.predict("cancer", objects) == service.predict("cancer", ROWS)


def test_regression_answers_numbers_and_no_probabilities(service, store, registry):
    version = release(store, registry, "price", 1, task="regression", n_features=3)

    answer = service.predict("price", [[1.0, 2.0, 3.0], [0, 0, 0]])

    assert "probabilities" not in answer
    expected = expected_output(store, "price", version, np.array([[1.0, 2.0, 3.0], [0, 0, 0]]))
    np.testing.assert_allclose(answer["predictions"], expected, atol=1e-6)


def test_an_approved_version_can_be_asked_for_by_id(service, store, registry, cancer):
    newer = release(store, registry, "cancer", 2, features=FEATURES, classes=CLASSES, value=0.95)

    assert service.predict("cancer", ROWS)["version"] == newer
    assert service.predict("cancer", ROWS, version=cancer)["version"] == cancer


# ---------------------------------------------------------------------- input checks
def test_a_row_with_the_wrong_number_of_values_is_named(service, cancer):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", [ROWS[0], [1.0, 2.0]])

    message = str(caught.value)
    assert "row 1: has 2 values, the model expects 4 features" in message
    assert "'mean radius', 'mean texture', 'mean area', 'worst smoothness'" in message


def test_missing_and_unknown_keys_are_named(service, cancer):
    row = {"mean radius": 1, "mean texture": 2, "mean area": 3, "worst smothness": 4}

    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", [row])

    assert "row 0: missing features 'worst smoothness'; unknown features 'worst smothness'" in (
        str(caught.value)
    )


def test_a_string_value_names_its_row_and_feature(service, cancer):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", [ROWS[0], [1.0, "12.5", 3.0, 4.0]])

    assert "row 1, feature 'mean texture': expected a number, got string '12.5'" in str(
        caught.value
    )


@pytest.mark.parametrize(("value", "shown"), [(True, "true"), (None, "null"), ([1], "a list")])
def test_booleans_nulls_and_lists_are_not_numbers(service, cancer, value, shown):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", [[1.0, 2.0, value, 4.0]])

    assert f"row 0, feature 'mean area': expected a number, got {shown}" in str(caught.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39])
def test_non_finite_values_are_named(service, cancer, value):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", [[1.0, 2.0, 3.0, value]])

    message = str(caught.value)
    assert "row 0, feature 'worst smoothness'" in message
    assert "NaN" in message if math.isnan(value) else "not a finite" in message


def test_every_problem_is_listed_up_to_a_limit(service, cancer):
    rows = [["x", 2.0, 3.0, 4.0] for _ in range(20)]

    with pytest.raises(InvalidInstances) as caught:
        service.predict("cancer", rows)

    message = str(caught.value)
    assert "row 0, feature 'mean radius'" in message
    assert "row 4, feature 'mean radius'" in message
    assert "row 5," not in message
    assert message.endswith("and more after these")


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], "must not be empty"),
        ([ROWS[0], {"mean radius": 1}], "row 1 is an object but row 0 is a list"),
        ([1.0, 2.0], "row 0 is a number: each row must be a list"),
        ("rows", "must be a list of rows, got string 'rows'"),
    ],
)
def test_instances_must_be_rows_of_one_kind(service, cancer, instances, message):
    with pytest.raises(InvalidInstances, match=message):
        service.predict("cancer", instances)


# ---------------------------------------------------------------------- categories, nulls
COLOR = Feature(name="color", dtype="category", categories=["blue", "green", "red"])
SIZE = Feature(name="size", nullable=True)
FLAG = Feature(
    name="flag", dtype="category", categories=[False, True, MISSING_CATEGORY], nullable=True
)
MIXED = Feature(name="grade", dtype="category", categories=["3", "A", "B"])
PETS = [COLOR, SIZE, FLAG, MIXED]


@pytest.fixture
def pets(store, registry) -> str:
    return release(store, registry, "pets", 1, features=PETS, classes=["cat", "dog"])


@pytest.fixture
def strict_pets(store, registry) -> str:
    """The pets model, trained with `serving: {unknown_categories: reject}` in its spec."""
    serving = {"serving": {"route": "auto", "memory_mb": None, "unknown_categories": "reject"}}
    return release(
        store, registry, "pets", 1, features=PETS, classes=["cat", "dog"], card_extra=serving
    )


def test_raw_category_values_reach_the_graph_as_their_codes(service, store, pets):
    rows = [["red", 2.5, True, "A"], ["blue", 0.0, False, "3"]]

    answer = service.predict("pets", rows)

    codes = np.array([[2, 2.5, 1, 1], [0, 0.0, 0, 0]])
    expected = expected_output(store, "pets", pets, codes)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)


def test_object_rows_with_categories_match_list_rows(service, pets):
    rows = [["green", 1.0, None, "B"]]
    objects = [{"grade": "B", "flag": None, "size": 1.0, "color": "green"}]

    assert service.predict("pets", objects) == service.predict("pets", rows)


def test_under_reject_an_unknown_category_names_row_feature_value_and_the_known_categories(
    service, strict_pets
):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("pets", [["red", 1.0, True, "A"], ["purple", 1.0, True, "A"]])

    assert (
        "row 1, feature 'color': unknown category 'purple'; "
        "known categories: 'blue', 'green', 'red'" in str(caught.value)
    )


def test_a_long_category_list_is_shortened_in_the_message():
    many = Feature(name="city", dtype="category", categories=[f"c{i:02d}" for i in range(30)])

    with pytest.raises(InvalidInstances) as caught:
        InputSchema([many], REJECT).batch([["nowhere"]])

    message = str(caught.value)
    assert "'c19'" in message and "'c20'" not in message
    assert "(and 10 more: the model's description, GET /models/<model>, lists them all)" in (
        message
    )


def test_text_categories_are_trimmed_but_case_sensitive():
    schema = InputSchema([COLOR], REJECT)

    assert schema.batch([["  red "]]).tolist() == [[2.0]]
    with pytest.raises(InvalidInstances, match="unknown category 'Red'"):
        schema.batch([["Red"]])


@pytest.mark.parametrize("value", [3, 3.0, "3", " 3"])
def test_a_number_matches_the_text_category_that_spells_it(value):
    assert InputSchema([MIXED]).batch([[value]]).tolist() == [[0.0]]


@pytest.mark.parametrize(("value", "code"), [(True, 1.0), ("false", 0.0), ("TRUE", 1.0)])
def test_boolean_categories_take_booleans_or_their_words(value, code):
    assert InputSchema([FLAG]).batch([[value]]).tolist() == [[code]]


@pytest.mark.parametrize(("value", "shown"), [(1, "1"), ("yes", "'yes'")])
def test_under_reject_a_boolean_category_refuses_other_values(value, shown):
    with pytest.raises(InvalidInstances) as caught:
        InputSchema([FLAG], REJECT).batch([[value]])

    assert f"unknown category {shown}; known categories: false, true, null" in str(caught.value)


def test_a_boolean_is_not_a_text_category():
    with pytest.raises(InvalidInstances, match="feature 'color': unknown category true"):
        InputSchema([COLOR], REJECT).batch([[True]])


def test_lists_and_objects_are_not_categories():
    with pytest.raises(InvalidInstances, match="feature 'color': expected a category, got a list"):
        InputSchema([COLOR]).batch([[["red"]]])


def test_null_is_the_missing_category_when_training_saw_one():
    assert InputSchema([FLAG]).batch([[None]]).tolist() == [[2.0]]
    assert InputSchema([FLAG]).batch([[MISSING_CATEGORY]]).tolist() == [[2.0]]


def test_under_reject_null_for_a_category_without_missing_values_is_named():
    with pytest.raises(InvalidInstances) as caught:
        InputSchema([COLOR], REJECT).batch([[None]])

    assert (
        "row 0, feature 'color': null is not accepted: the feature had no missing values in "
        "training; send one of 'blue', 'green', 'red'" in str(caught.value)
    )


def test_null_for_a_nullable_number_reaches_the_graph_as_nan():
    batch = InputSchema([SIZE, COLOR]).batch([[None, "red"], [1.5, "blue"]])

    assert np.isnan(batch[0, 0]) and batch[1].tolist() == [1.5, 0.0]


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e39])
def test_infinity_stays_refused_for_a_nullable_number(value):
    with pytest.raises(InvalidInstances) as caught:
        InputSchema([SIZE]).batch([[value]])

    assert "row 0, feature 'size'" in str(caught.value)
    assert "is not a finite float32 number" in str(caught.value)


def test_under_reject_every_bad_value_of_a_row_is_named(service, strict_pets):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("pets", [["red", "big", 7, "C"]])

    message = str(caught.value)
    assert "row 0, feature 'size': expected a number, got string 'big'" in message
    assert "row 0, feature 'flag': unknown category 7" in message
    assert "row 0, feature 'grade': unknown category 'C'" in message
    assert "feature 'color'" not in message


def test_describe_model_shows_the_categories_and_what_may_be_null(service, pets):
    features = service.describe_model("pets")["features"]

    assert features[0] == {
        "name": "color",
        "dtype": "category",
        "categories": ["blue", "green", "red"],
        "nullable": False,
    }
    assert features[1]["dtype"] == "number" and features[1]["nullable"] is True
    assert features[2]["categories"] == [False, True, MISSING_CATEGORY]


def test_the_card_keeps_booleans_apart_from_numbers_in_categories():
    feature = Feature.model_validate_json(
        '{"name": "f", "dtype": "category", "categories": [true, 1, "1"]}'
    )

    assert [type(c) for c in feature.categories or []] == [bool, int, str]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"dtype": "category"}, "lists its categories"),
        ({"dtype": "category", "categories": ["a", "a"]}, "must be unique"),
        ({"dtype": "category", "categories": ["a", MISSING_CATEGORY]}, "nullable must say"),
        ({"categories": ["a"]}, "only category features have categories"),
    ],
)
def test_the_card_refuses_an_inconsistent_feature(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        Feature(name="f", **fields)


# ---------------------------------------------------------------------- which model
def test_an_unknown_model_is_not_found(service, cancer):
    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        service.predict("nope", ROWS)


def test_a_known_model_without_champion_is_not_ready(service, registry):
    Catalog(registry).add_model("training-now")

    with pytest.raises(NotReadyError) as caught:
        service.predict("training-now", ROWS)

    assert caught.value.retry_after > 0
    assert "no champion yet" in str(caught.value)


def test_a_malformed_model_name_is_refused(service):
    with pytest.raises(InvalidName, match="invalid model name 'Cancer!'"):
        service.predict("Cancer!", ROWS)


def test_an_unknown_version_is_not_found(service, cancer):
    with pytest.raises(NotFoundError, match="has no version 'v20261123T101559Z-00003b'"):
        service.predict("cancer", ROWS, version=version_id(59))


def test_a_rejected_version_is_never_served(service, store, registry, cancer):
    worse = version_id(2)
    publish(store, registry, "cancer", worse, features=FEATURES, classes=CLASSES, value=0.5)
    assert promote("cancer", worse, store, registry).decision == "rejected"

    with pytest.raises(NotFoundError, match="was rejected by promotion"):
        service.predict("cancer", ROWS, version=worse)


def test_a_version_still_under_promotion_is_not_ready(service, store, registry, cancer):
    pending = version_id(2)
    publish(store, registry, "cancer", pending, features=FEATURES, classes=CLASSES)
    Catalog(registry).record_version(
        VersionRecord(model="cancer", version=pending, job_id="j", decision="pending")
    )

    with pytest.raises(NotReadyError):
        service.predict("cancer", ROWS, version=pending)


# ------------------------------------------------------------------ a model with nothing to serve
STEPS = {
    JobState.QUEUED: [],
    JobState.LAUNCHING: [JobState.LAUNCHING],
    JobState.RUNNING: [JobState.LAUNCHING, JobState.RUNNING],
    JobState.INTERRUPTED: [JobState.LAUNCHING, JobState.INTERRUPTED],
    JobState.EXPORTING: [JobState.LAUNCHING, JobState.RUNNING, JobState.EXPORTING],
    JobState.PUBLISHED: [JobState.LAUNCHING, JobState.RUNNING, JobState.EXPORTING],
    JobState.FAILED: [],
}


def job(registry, model: str, state: JobState, at: float, **changes) -> Job:
    """A job of `model` created at `at` (epoch seconds), taken through the lifecycle to `state`."""
    jobs = JobStore(registry)
    created = jobs.create(
        Job(job_id=new_job_id(model, at), model=model, data_version=f"d{at}", created_at=at)
    )
    for step in STEPS[state]:
        jobs.transition(created.job_id, step)
    return jobs.transition(created.job_id, state, **changes)


def test_a_model_whose_only_job_failed_names_the_job_and_its_reason(service, registry):
    failed = job(
        registry, "iris", JobState.FAILED, 100.0, reason="data.csv line 7: 3 fields, 4 expected"
    )

    with pytest.raises(NoServableVersion) as caught:
        service.predict("iris", ROWS)

    assert str(caught.value) == (
        f"model 'iris' has no servable version: its last training job {failed.job_id} failed: "
        "data.csv line 7: 3 fields, 4 expected; a new drop under datasets/iris/ trains it again"
    )
    assert isinstance(caught.value, NotFoundError)  # a 404, no promise to retry


def test_the_newest_failure_is_the_one_named(service, registry):
    job(registry, "iris", JobState.FAILED, 100.0, reason="the old reason")
    newest = job(registry, "iris", JobState.FAILED, 200.0, reason="the new reason")

    with pytest.raises(NoServableVersion, match=f"job {newest.job_id} failed: the new reason"):
        service.predict("iris", ROWS)


@pytest.mark.parametrize(
    "state",
    [
        JobState.QUEUED,
        JobState.LAUNCHING,
        JobState.RUNNING,
        JobState.INTERRUPTED,
        JobState.EXPORTING,
    ],
)
def test_a_job_under_way_keeps_the_model_not_ready(service, registry, state):
    job(registry, "iris", JobState.FAILED, 100.0, reason="broken")
    job(registry, "iris", state, 200.0)

    with pytest.raises(NotReadyError) as caught:
        service.predict("iris", ROWS)

    assert caught.value.retry_after > 0
    assert "no champion yet" in str(caught.value)


def test_a_version_promotion_has_not_decided_keeps_the_model_not_ready(service, registry):
    published = job(registry, "iris", JobState.PUBLISHED, 100.0, version=version_id(1))
    Catalog(registry).record_version(
        VersionRecord(model="iris", version=version_id(1), job_id=published.job_id)
    )

    with pytest.raises(NotReadyError):
        service.predict("iris", ROWS)


def test_a_published_version_promotion_has_not_seen_yet_keeps_the_model_not_ready(
    service, registry
):
    job(registry, "iris", JobState.PUBLISHED, 100.0, version=version_id(1))

    with pytest.raises(NotReadyError):
        service.predict("iris", ROWS)


def test_a_model_whose_last_version_was_rejected_names_the_rejection(service, registry):
    published = job(registry, "iris", JobState.PUBLISHED, 100.0, version=version_id(1))
    Catalog(registry).record_version(
        VersionRecord(
            model="iris",
            version=version_id(1),
            job_id=published.job_id,
            decision="rejected",
            reason="parity check failed: max abs diff 0.3 > 0.001",
        )
    )

    with pytest.raises(NoServableVersion) as caught:
        service.predict("iris", ROWS)

    assert str(caught.value) == (
        f"model 'iris' has no servable version: version {version_id(1)}, published by its last "
        f"training job {published.job_id}, was rejected by promotion: parity check failed: "
        "max abs diff 0.3 > 0.001; a new drop under datasets/iris/ trains it again"
    )


def test_a_long_reason_is_cut_for_the_client(service, registry):
    job(registry, "iris", JobState.FAILED, 100.0, reason="x" * 5000)

    with pytest.raises(NoServableVersion) as caught:
        service.predict("iris", ROWS)

    assert len(str(caught.value)) < 700
    assert "xxx..." in str(caught.value)


def test_the_answer_for_a_failed_model_is_kept_as_long_as_a_pointer(
    service, counted, clock, registry
):
    _, counting = counted
    job(registry, "iris", JobState.FAILED, 100.0, reason="broken")
    with pytest.raises(NoServableVersion):
        service.predict("iris", ROWS)
    counting.calls.clear()

    with pytest.raises(NoServableVersion):
        service.predict("iris", ROWS)
    assert counting.total == 0  # a client retrying reads nothing

    job(registry, "iris", JobState.QUEUED, 200.0)  # a new drop
    clock.advance(5.0)
    with pytest.raises(NotReadyError):
        service.predict("iris", ROWS)


def test_a_failed_model_is_served_once_a_champion_is_switched_in(service, clock, store, registry):
    job(registry, "iris", JobState.FAILED, 100.0, reason="broken")
    with pytest.raises(NoServableVersion):
        service.predict("iris", ROWS)

    release(store, registry, "iris", 1, features=FEATURES, classes=CLASSES)
    clock.advance(5.0)

    assert service.predict("iris", ROWS)["version"] == version_id(1)


# ---------------------------------------------------------------------- caching
def test_a_warm_request_does_no_store_or_registry_io(service, counted, cancer):
    store, registry = counted
    service.predict("cancer", ROWS)  # cold: reads pointer, card and model
    store.calls.clear()
    registry.calls.clear()

    service.predict("cancer", ROWS)
    service.predict("cancer", [dict(zip(FEATURES, ROWS[0], strict=True))])

    assert store.total == 0
    assert registry.total == 0


def test_a_warm_request_for_a_pinned_version_does_no_io(service, counted, cancer):
    store, registry = counted
    service.predict("cancer", ROWS, version=cancer)
    store.calls.clear()
    registry.calls.clear()

    service.predict("cancer", ROWS, version=cancer)

    assert store.total + registry.total == 0


def test_the_champion_pointer_is_trusted_until_the_ttl_expires(
    service, counted, clock, store, registry, cancer
):
    _, counted_registry = counted
    assert service.predict("cancer", ROWS)["version"] == cancer
    newer = release(store, registry, "cancer", 2, features=FEATURES, classes=CLASSES, value=0.95)

    clock.advance(4.9)
    assert service.predict("cancer", ROWS)["version"] == cancer

    counted_registry.calls.clear()
    clock.advance(0.2)
    assert service.predict("cancer", ROWS)["version"] == newer
    # The pointer, and the new version's record (the digests its files must match); the
    # card and model are new.
    assert counted_registry.calls == {"get": 2}


def test_after_a_refresh_the_pointer_is_cached_again(service, counted, clock, cancer):
    _, registry = counted
    service.predict("cancer", ROWS)
    clock.advance(6)
    service.predict("cancer", ROWS)  # refresh
    registry.calls.clear()

    clock.advance(1)
    service.predict("cancer", ROWS)

    assert registry.total == 0


def test_sessions_use_every_available_cpu(service, cancer):
    service.predict("cancer", ROWS)

    session = service.cache.session("cancer", cancer)

    assert session.get_session_options().intra_op_num_threads == available_cpus()


def test_old_sessions_are_evicted_beyond_the_limit(store, registry):
    cache = ModelCache(store, registry, max_sessions=2)
    versions = [
        release(store, registry, "cancer", n, features=FEATURES, classes=CLASSES, value=0.9)
        for n in (1, 2, 3)
    ]
    service = PredictionService(cache)

    for version in versions:
        service.predict("cancer", ROWS, version=version)

    assert cache.held_sessions == [("cancer", versions[1]), ("cancer", versions[2])]


class HeldModelFile:
    """A store whose reads of a model.onnx wait until `release` is set (counted in
    `model_reads`): a load held mid-way, as a large file's read is."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.release = threading.Event()
        self.model_reads = 0

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def get(self, key: str) -> bytes:
        if key.endswith("/model.onnx"):
            self.model_reads += 1
            assert self.release.wait(60), "the test never released the read"
        return self._inner.get(key)


def test_a_version_asked_for_while_it_loads_is_loaded_once_for_every_caller(
    store, registry, cancer
):
    held = HeldModelFile(store)
    cache = ModelCache(held, registry)
    sessions: list = []
    threads = [
        threading.Thread(target=lambda: sessions.append(cache.session("cancer", cancer)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    # All three are in: one reading model.onnx (held), two waiting for its load.
    wait_until(lambda: cache.loading.get(("cancer", cancer)) == 3, 60, what="3 callers")

    held.release.set()
    for thread in threads:
        thread.join(60)

    assert held.model_reads == 1
    assert len(sessions) == 3 and all(s is sessions[0] for s in sessions)
    assert cache.loading == {}
    assert cache.held_sessions == [("cancer", cancer)]


def test_a_failed_load_lets_the_next_caller_try_again(store, registry, cancer):
    cache = ModelCache(store, registry)
    key = artifact_key("cancer", cancer, "model.onnx")
    good = store.get(key)
    store.put(key, b"not a graph")  # its digest no longer matches: refused
    with pytest.raises(NotReadyError):
        cache.session("cancer", cancer)
    assert cache.loading == {}

    store.put(key, good)  # restored
    clock_after_hold = cache.clock() + 3600
    cache.clock = lambda: clock_after_hold  # past the refusal's hold

    assert cache.session("cancer", cancer) is not None
    assert cache.held_sessions == [("cancer", cancer)]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has CUDA, which may well start here",
)
def test_a_session_that_asked_for_cuda_and_runs_on_the_cpu_is_logged_as_a_warning(
    store, registry, cancer, caplog
):
    cache = ModelCache(store, registry)
    # As in the container image with onnxruntime-gpu whose CUDA cannot start (no GPU, no
    # cuDNN): CUDA is asked for first, and onnxruntime builds the session on the CPU.
    cache.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]

    with caplog.at_level(logging.INFO, logger=SERVICE):
        cache.session("cancer", cancer)

    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "CUDA could not start" in warning.getMessage()
    assert (warning.model, warning.version) == ("cancer", cancer)
    assert cache.session_providers == {("cancer", cancer): "CPUExecutionProvider"}


def test_a_session_on_the_provider_asked_first_logs_its_load_without_warning(
    store, registry, cancer, caplog
):
    cache = ModelCache(store, registry)

    # On dropflow's logger itself: a handler loaded earlier in the run may have set its level
    # from POWERTOOLS_LOG_LEVEL (WARNING in some tests), below which INFO never propagates.
    with caplog.at_level(logging.INFO, logger=SERVICE):
        cache.session("cancer", cancer)

    (loaded,) = [r for r in caplog.records if r.getMessage() == "model loaded"]
    assert loaded.provider == cache.providers[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------- GET routes
def test_list_models_shows_each_champion(service, registry, cancer):
    Catalog(registry).add_model("training-now")

    assert service.list_models() == [
        {"name": "cancer", "champion": cancer},
        {"name": "training-now", "champion": None},
    ]


def test_describe_model_gives_the_input_schema_classes_and_metrics(service, cancer):
    described = service.describe_model("cancer")

    assert described["champion"] == cancer
    assert described["ready"] is True
    assert described["task"] == "classification"
    assert [f["name"] for f in described["features"]] == FEATURES
    assert described["classes"] == CLASSES
    assert described["metrics"]["primary"] == "accuracy"
    assert described["versions"] == 1


def test_describe_a_model_without_champion_says_it_is_not_ready(service, registry):
    Catalog(registry).add_model("training-now")

    described = service.describe_model("training-now")

    assert described["ready"] is False
    assert described["champion"] is None


def test_describe_an_unknown_model_is_not_found(service):
    with pytest.raises(NotFoundError):
        service.describe_model("nope")


# ---------------------------------------------------------------------- memory budget
def _session_mb(store, model: str, version: str) -> float:
    from dropflow.vocabulary.card import artifact_key
    from dropflow.vocabulary.routing import session_memory_mb

    return session_memory_mb(len(store.get(artifact_key(model, version, "model.onnx"))))


def test_sessions_are_evicted_least_recently_used_first_to_fit_the_memory_budget(store, registry):
    versions = [
        release(store, registry, "cancer", n, features=FEATURES, classes=CLASSES, value=0.9)
        for n in (1, 2, 3)
    ]
    one = _session_mb(store, "cancer", versions[0])
    cache = ModelCache(store, registry, budget_mb=2.5 * one)
    service = PredictionService(cache)

    service.predict("cancer", ROWS, version=versions[0])
    service.predict("cancer", ROWS, version=versions[1])
    service.predict("cancer", ROWS, version=versions[0])  # now the most recently used
    service.predict("cancer", ROWS, version=versions[2])

    assert cache.held_sessions == [("cancer", versions[0]), ("cancer", versions[2])]
    assert cache.memory_used_mb <= cache.budget_mb


def test_a_model_larger_than_the_budget_is_still_served_alone(store, registry):
    small = release(store, registry, "cancer", 1, features=FEATURES, classes=CLASSES)
    large = release(store, registry, "wide", 1, n_features=200)
    cache = ModelCache(store, registry, budget_mb=1.5 * _session_mb(store, "cancer", small))
    service = PredictionService(cache)
    service.predict("cancer", ROWS)

    answer = service.predict("wide", [[0.5] * 200])

    assert answer["version"] == large
    assert cache.held_sessions == [("wide", large)]


def test_the_cache_budget_defaults_to_the_function_memory(store, registry, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")

    assert ModelCache(store, registry).budget_mb == 2048 - 160


# ---------------------------------------------------------------------- routes
class FakeTier:
    """Stands in for the container tier's HTTP client; remembers what was forwarded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def predict(self, model, version, instances):
        self.calls.append(("predict", model, version))
        return {"model": model, "version": version, "predictions": [], "served_by": "container"}

    def infer(self, model, version, body):
        self.calls.append(("infer", model, version))
        return {"model_name": model, "model_version": version, "outputs": []}

    def model_ready(self, model, version):
        self.calls.append(("ready", model, version))
        return True, ""


def release_large(store, registry, model: str = "large", n: int = 1) -> str:
    from dropflow.vocabulary.routing import RoutePolicy

    version = version_id(n)
    publish(store, registry, model, version, features=FEATURES, classes=CLASSES)
    policy = RoutePolicy(max_model_mb=0.0001)  # every test graph is "large"
    assert promote(model, version, store, registry, policy=policy).route == "container"
    return version


def test_a_container_version_is_forwarded_and_never_loaded_here(counted, store, registry):
    counted_store, counted_registry = counted
    version = release_large(store, registry)
    tier = FakeTier()
    service = PredictionService(ModelCache(counted_store, counted_registry), tier=tier)

    answer = service.predict("large", ROWS)

    assert answer["served_by"] == "container"
    assert tier.calls == [("predict", "large", version)]
    assert service.cache.held_sessions == []
    assert counted_store.total == 0  # neither the card nor the graph was read


def test_a_warm_forwarded_request_does_no_registry_io(counted, store, registry):
    counted_store, counted_registry = counted
    release_large(store, registry)
    service = PredictionService(ModelCache(counted_store, counted_registry), tier=FakeTier())
    service.predict("large", ROWS)
    counted_registry.calls.clear()

    service.predict("large", ROWS)

    assert counted_registry.total == 0


def test_a_pinned_container_version_is_forwarded_too(store, registry):
    version = release_large(store, registry)
    tier = FakeTier()
    service = PredictionService(ModelCache(store, registry), tier=tier)

    service.predict("large", ROWS, version=version)

    assert tier.calls == [("predict", "large", version)]


def test_the_container_tier_serves_container_versions_itself(store, registry):
    release_large(store, registry)
    service = PredictionService(ModelCache(store, registry), served_by="container")

    answer = service.predict("large", ROWS)

    assert answer["served_by"] == "container"
    assert len(answer["predictions"]) == len(ROWS)


def test_without_a_tier_a_container_version_is_not_ready(store, registry):
    release_large(store, registry)
    service = PredictionService(ModelCache(store, registry))

    with pytest.raises(NotReadyError, match="DROPFLOW_CONTAINER_URL") as raised:
        service.predict("large", ROWS)
    assert raised.value.retry_after > 0


def test_describe_model_shows_the_route(service, store, registry, cancer):
    release_large(store, registry)

    assert service.describe_model("cancer")["route"] == "lambda"
    assert service.describe_model("large")["route"] == "container"


def test_preload_loads_only_the_container_champions(store, registry, cancer):
    large = release_large(store, registry)
    service = PredictionService(ModelCache(store, registry), served_by="container")

    assert service.preload() == [("large", large)]
    assert service.cache.held_sessions == [("large", large)]


def test_a_batch_of_plain_numbers_is_encoded_as_the_per_value_checks_would():
    schema = InputSchema(["a", "b", "c"])
    rng = np.random.default_rng(0)
    rows = [[float(v) for v in r] for r in rng.normal(size=(500, 3)) * 1e3]
    rows[7] = [1, -2, 3]  # ints are numbers too

    batch = schema.batch(rows)

    assert batch.dtype == np.float32
    assert np.array_equal(batch, np.array(rows, dtype=np.float32))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "expected a number, got true"),
        (None, "expected a number, got null"),
        (float("nan"), "NaN is not allowed"),
        (1e39, "is not a finite float32 number"),
        (10**400, "number too large"),
    ],
)
def test_one_bad_value_among_many_plain_numbers_is_still_named(value, problem):
    schema = InputSchema(["a", "b"])
    rows = [[1.0, 2.0]] * 300 + [[1.0, value]]

    with pytest.raises(InvalidInstances, match=r"row 300, feature 'b'.*" + problem):
        schema.batch(rows)
