"""Retention: the champion and the newest approved versions keep their files, every other
version is retired (its files marked so that S3's lifecycle rule expires them), and a rollback
takes a retired version back before serving it."""

from __future__ import annotations

import pytest

from dropflow.promotion.gate import promote
from dropflow.promotion.retention import plan_retention
from dropflow.promotion.rollback import RollbackRefused, rollback
from dropflow.records.catalog import Catalog, VersionRecord
from dropflow.vocabulary.card import artifact_key, version_prefix
from tests.fakes_serving import publish, version_id

V = {n: version_id(n) for n in range(1, 10)}


def record(n: int, decision: str = "approved") -> VersionRecord:
    return VersionRecord(model="m", version=V[n], job_id=f"j{n}", decision=decision)


def retired_files(store, version: str) -> list[bool]:
    """Whether each of the version's files carries the retired mark (one bool per file)."""
    return [store.is_retired(i.key) for i in store.list(version_prefix("m", version))]


def retired_versions(store, registry) -> set[str]:
    """The versions whose files are all marked, checked against the catalog's records."""
    marked = {
        r.version for r in Catalog(registry).versions("m") if all(retired_files(store, r.version))
    }
    recorded = {r.version for r in Catalog(registry).versions("m") if r.retired_at is not None}
    assert marked == recorded, "the files' marks and the records disagree"
    return marked


def publish_and_promote(store, registry, n: int, value: float, keep: int = 3) -> str:
    publish(store, registry, "m", V[n], value=value, seed=n)
    return promote("m", V[n], store, registry, keep_versions=keep).decision


# --------------------------------------------------------------------------- the rule
def test_the_champion_and_the_newest_approved_versions_are_kept():
    versions = [record(n) for n in range(1, 7)]

    plan = plan_retention(versions, champion=V[6], keep=3)

    assert plan.kept == {V[6], V[5], V[4], V[3]}
    assert plan.retired == {V[1], V[2]}


def test_a_rejected_version_is_retired_at_once_even_when_newest():
    versions = [record(1), record(2), record(3, "rejected")]

    plan = plan_retention(versions, champion=V[2], keep=3)

    assert plan.retired == {V[3]}


def test_a_version_not_decided_yet_is_never_retired():
    versions = [record(1), record(2, "pending"), record(3)]

    assert plan_retention(versions, champion=V[3], keep=0).retired == {V[1]}


def test_after_a_rollback_the_versions_it_stepped_back_from_are_kept():
    # Rolled back from 6 to 2: `rollback` (the pointer's previous) rolls forward to 6 again.
    versions = [record(n) for n in range(1, 7)]

    plan = plan_retention(versions, champion=V[2], keep=3)

    assert plan.kept == {V[2], V[6], V[5], V[4]}
    assert plan.retired == {V[1], V[3]}


def test_keep_zero_keeps_only_the_champion():
    versions = [record(n) for n in range(1, 4)]

    assert plan_retention(versions, champion=V[3], keep=0).kept == {V[3]}


def test_without_a_champion_the_newest_approved_versions_are_kept():
    versions = [record(1), record(2), record(3, "rejected")]

    plan = plan_retention(versions, champion=None, keep=1)

    assert (plan.kept, plan.retired) == ({V[2]}, {V[1], V[3]})


def test_a_negative_keep_is_refused():
    with pytest.raises(ValueError, match="keep must be 0 or more"):
        plan_retention([], champion=None, keep=-1)


# --------------------------------------------------------------------------- promotion
def test_versions_behind_the_kept_ones_are_retired_as_promotions_go_on(store, registry):
    for n in range(1, 7):
        assert publish_and_promote(store, registry, n, value=0.80 + n / 100) == "approved"

    assert retired_versions(store, registry) == {V[1], V[2]}
    assert not any(retired_files(store, V[6]))  # the champion's files never expire


def test_promotion_reports_the_versions_it_retired(store, registry):
    for n in range(1, 3):
        publish_and_promote(store, registry, n, value=0.80 + n / 100, keep=0)
    publish(store, registry, "m", V[3], value=0.9, seed=3)

    result = promote("m", V[3], store, registry, keep_versions=0)

    assert (result.retired, result.unretired, result.retention_error) == ([V[2]], [], None)


def test_a_rejected_version_is_retired_by_its_own_promotion(store, registry):
    publish_and_promote(store, registry, 1, value=0.9)

    assert publish_and_promote(store, registry, 2, value=0.5) == "rejected"

    assert retired_versions(store, registry) == {V[2]}
    assert all(retired_files(store, V[2])) and len(retired_files(store, V[2])) == 3


def test_a_version_that_fails_parity_is_retired(store, registry):
    publish_and_promote(store, registry, 1, value=0.9)
    publish(store, registry, "m", V[2], value=0.99, skew_reference=0.05)

    assert promote("m", V[2], store, registry).decision == "rejected"
    assert retired_versions(store, registry) == {V[2]}


def test_a_replayed_event_changes_nothing(store, registry):
    for n in range(1, 4):
        publish_and_promote(store, registry, n, value=0.80 + n / 100, keep=1)
    before = {r.version: r.retired_at for r in Catalog(registry).versions("m")}

    again = promote("m", V[3], store, registry, keep_versions=1)

    assert again.replayed and (again.retired, again.unretired) == ([], [])
    assert {r.version: r.retired_at for r in Catalog(registry).versions("m")} == before
    assert retired_versions(store, registry) == {V[1]}


def test_a_retention_run_cut_short_is_finished_by_the_replayed_event(store, registry, monkeypatch):
    publish_and_promote(store, registry, 1, value=0.9)
    publish(store, registry, "m", V[2], value=0.5, seed=2)

    def crash(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    # The files get marked, then recording the retirement fails.
    with monkeypatch.context() as patch:
        patch.setattr(Catalog, "mark_retired", crash)
        first = promote("m", V[2], store, registry)
    assert first.decision == "rejected"  # the decision stands
    assert first.retention_error == "registry unreachable"
    assert Catalog(registry).version("m", V[2]).retired_at is None

    replay = promote("m", V[2], store, registry)

    assert replay.replayed and replay.retired == [V[2]]
    assert retired_versions(store, registry) == {V[2]}


def test_marks_found_on_the_champions_files_are_removed(store, registry):
    publish_and_promote(store, registry, 1, value=0.9)
    for info in store.list(version_prefix("m", V[1])):
        store.set_retired(info.key, True)  # e.g. by a run that raced a champion switch

    publish_and_promote(store, registry, 2, value=0.5)

    assert not any(retired_files(store, V[1]))


# --------------------------------------------------------------------------- rollback
@pytest.fixture
def history(store, registry):
    """Six approved versions (champion 6) and a rejected one (7), keeping one besides the
    champion: versions 1-4 and 7 are retired."""
    for n in range(1, 7):
        publish_and_promote(store, registry, n, value=0.80 + n / 100, keep=1)
    publish_and_promote(store, registry, 7, value=0.5, keep=1)
    assert retired_versions(store, registry) == {V[1], V[2], V[3], V[4], V[7]}
    return store, registry


def test_a_promotion_rejection_and_rollback_sequence_retires_by_the_rule(history):
    store, registry = history

    result = rollback("m", store, registry, keep_versions=1)

    # Champion 5 now; 6 (rolled back from) is the newest other approved version, so kept.
    assert (result.champion_after, result.retired, result.unretired) == (V[5], [], [])
    assert retired_versions(store, registry) == {V[1], V[2], V[3], V[4], V[7]}


def test_a_rollback_to_a_retired_version_takes_its_files_back_first(history, monkeypatch):
    store, registry = history
    marks_at_switch = []
    switch = Catalog.switch_champion

    def watched(self, model, version, **kwargs):
        marks_at_switch.extend(retired_files(store, version))
        return switch(self, model, version, **kwargs)

    monkeypatch.setattr(Catalog, "switch_champion", watched)

    result = rollback("m", store, registry, to_version=V[2], keep_versions=1)

    assert marks_at_switch == [False, False, False]  # unmarked before the pointer moved

    assert result.champion_after == V[2]
    assert V[2] in result.unretired
    assert not any(retired_files(store, V[2]))
    assert Catalog(registry).version("m", V[2]).retired_at is None
    # Kept: champion 2 and the newest other approved version, 6; 5 falls out.
    assert retired_versions(store, registry) == {V[1], V[3], V[4], V[5], V[7]}


def test_a_rollback_to_a_retired_version_whose_files_aged_out_is_refused(history):
    store, registry = history
    store.delete(artifact_key("m", V[3], "model.onnx"))  # what the lifecycle rule does

    with pytest.raises(RollbackRefused) as refused:
        rollback("m", store, registry, to_version=V[3], keep_versions=1)

    message = str(refused.value)
    assert "was retired on" in message and "aged out" in message
    assert f"model.onnx missing under models/m/{V[3]}/" in message
    assert Catalog(registry).champion("m").version == V[6]
    assert all(retired_files(store, V[3]))  # what is left keeps ageing out
    assert retired_versions(store, registry) == {V[1], V[2], V[3], V[4], V[7]}


def test_a_refused_rollback_to_a_retired_version_leaves_it_retired(history):
    store, registry = history
    publish(store, registry, "m", V[8], value=0.99, skew_reference=0.05, seed=8)
    promote("m", V[8], store, registry, keep_versions=1)  # rejected: parity

    with pytest.raises(RollbackRefused, match="fails the parity re-check"):
        rollback("m", store, registry, to_version=V[8], keep_versions=1)

    assert Catalog(registry).champion("m").version == V[6]
    assert V[8] in retired_versions(store, registry)


def test_a_rollback_to_a_version_rejected_on_metrics_serves_it_unmarked(history):
    store, registry = history

    result = rollback("m", store, registry, to_version=V[7], keep_versions=1)

    assert result.champion_after == V[7] and V[7] in result.unretired
    assert Catalog(registry).version("m", V[7]).decision == "approved"
    assert not any(retired_files(store, V[7]))
