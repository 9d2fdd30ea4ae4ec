"""Retention: which versions' files are kept for good, and which are retired to age out.

The rule, applied after every promotion decision and every rollback:

  kept     the champion; every version not decided yet; and the newest `keep` approved
           versions other than the champion (what `dropflow models rollback` goes back to:
           the versions before the champion, and after a rollback also the ones it stepped
           back from, so that rolling forward again finds its files)
  retired  every other decided version: a rejected one at once, an approved one once `keep`
           newer approved versions (besides the champion) exist

A retired version's files (everything under `models/<model>/<version>/`) carry the object
store's retired mark and its record in the catalog says since when (`retired_at`). On S3 the
bucket's lifecycle rule expires marked objects under models/ RetiredModelRetentionDays after
they were written (S3 counts from an object's creation, so a version retired late goes at the
next lifecycle run); unmarked objects never expire. Locally the mark is only a record.

Marking is idempotent and converges: the files are marked before the record says so and
unmarked before the record says so, so a run cut short is finished by the next one, and the
champion's files are unmarked at the end of every run, whoever marked them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from dropflow.errors import brief
from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.records.catalog import Catalog, VersionRecord
from dropflow.vocabulary.card import InvalidCard, artifact_key, read_card, version_prefix

log = logging.getLogger(__name__)

# Approved versions kept behind the champion when the settings say nothing.
DEFAULT_KEEP = 3


@dataclass(frozen=True)
class RetentionPlan:
    """The versions of one model whose files are kept, and those that are retired."""

    kept: frozenset[str]
    retired: frozenset[str]


class RetentionOutcome(BaseModel):
    """What one run changed: versions newly retired, and versions taken back (unretired);
    or, from retain_or_explain, what failed (`error`) and nothing changed."""

    retired: list[str] = []
    unretired: list[str] = []
    error: str | None = None


def plan_retention(
    versions: Sequence[VersionRecord], champion: str | None, keep: int = DEFAULT_KEEP
) -> RetentionPlan:
    """Split `versions` of one model by the rule above (`champion`: its version, if any)."""
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    ordered = sorted(versions, key=lambda r: r.version)  # versions sort by time
    kept = {r.version for r in ordered if r.decision == "pending"}
    if champion is not None:
        kept.add(champion)
    others = [r for r in ordered if r.decision == "approved" and r.version != champion]
    if keep:
        kept.update(r.version for r in others[-keep:])
    retired = {r.version for r in ordered} - kept
    return RetentionPlan(kept=frozenset(kept), retired=frozenset(retired))


def apply_retention(
    model: str, store: ObjectStore, catalog: Catalog, keep: int = DEFAULT_KEEP
) -> RetentionOutcome:
    """Mark and unmark files so that they follow the rule; returns what changed.

    Only versions whose record disagrees with the plan are touched, plus the champion's
    files, which are always unmarked (so a mark set by a run racing a champion switch never
    stays on them). Raises what the store or registry raise; running it again finishes.
    """
    versions = catalog.versions(model)
    champion = catalog.champion(model)
    plan = plan_retention(versions, champion.version if champion else None, keep)
    outcome = RetentionOutcome()
    for record in versions:
        should = record.version in plan.retired
        if (record.retired_at is not None) == should:
            continue
        mark_version(store, model, record.version, retired=should)
        catalog.mark_retired(model, record.version, should)
        (outcome.retired if should else outcome.unretired).append(record.version)
    current = catalog.champion(model)
    if current is not None:
        mark_version(store, model, current.version, retired=False)
        record = catalog.version(model, current.version)
        if record is not None and record.retired_at is not None:
            catalog.mark_retired(model, current.version, False)
            if current.version not in outcome.unretired:
                outcome.unretired.append(current.version)
    return outcome


def retain_or_explain(
    model: str, store: ObjectStore, catalog: Catalog, keep: int = DEFAULT_KEEP
) -> RetentionOutcome:
    """apply_retention's outcome, or one carrying what failed (logged) as its `error`:
    housekeeping must not undo the decision that asked for it; files are kept longer, never
    lost, and the next run finishes it."""
    try:
        return apply_retention(model, store, catalog, keep)
    except Exception as exc:
        log.warning("could not apply retention to %s: %s", model, exc)
        return RetentionOutcome(error=brief(exc))


def mark_version(store: ObjectStore, model: str, version: str, *, retired: bool) -> list[str]:
    """Set or clear the retired mark on every file of the version; the keys marked.

    A file that disappears meanwhile (it aged out) is skipped.
    """
    marked = []
    for info in store.list(version_prefix(model, version)):
        try:
            store.set_retired(info.key, retired)
        except ObjectNotFound:
            continue
        marked.append(info.key)
    return marked


def missing_files(store: ObjectStore, model: str, version: str) -> list[str]:
    """The names of the version's files that are gone: card.json, or those its card lists."""
    try:
        card = read_card(store, model, version)
    except ObjectNotFound:
        return ["card.json"]
    except InvalidCard:  # whoever reads it next says so what is wrong
        return []
    return sorted(
        {
            name
            for name in card.files.values()
            if store.head(artifact_key(model, version, name)) is None
        }
    )
