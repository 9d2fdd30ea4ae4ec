"""The model catalog in the registry: every published version, its decision, the champion.

pk MODEL#<model>: sk VERSION#<version> per version, sk CHAMPION for the pointer that serving
follows, sk CHANGE#<time>#<version> for each switch of that pointer (promotion or rollback).
The model's training jobs have a partition of their own (dropflow.records.jobs).
The champion switch is a compare-and-set, so two promotions (or a promotion and a rollback)
never both win.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from dropflow.errors import ConcurrentUpdate
from dropflow.ports import Registry
from dropflow.vocabulary.names import check_model_name
from dropflow.vocabulary.routing import Route

# The registry's list of models (sk: the model's name), and each model's partition, which
# holds its versions and champion (and the launcher's records of the model: its active slot
# and claims).
MODELS_PK = "MODELS"


def model_pk(model: str) -> str:
    return f"MODEL#{model}"


Decision = Literal["pending", "approved", "rejected"]

# Compare-and-set rounds for a version record's retired mark before giving up.
_MARK_ROUNDS = 5


class VersionRecord(BaseModel):
    model: str
    version: str
    job_id: str
    decision: Decision = "pending"
    reason: str | None = None
    primary_metric: str | None = None
    primary_value: float | None = None
    published_at: float | None = None
    decided_at: float | None = None
    # What the gate compared: primary, candidate, champion, champion_version, basis, rows, ...
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Where it is served (dropflow.vocabulary.routing) and why; None on versions from before
    # routing,
    # which the predict function serves itself.
    route: Route | None = None
    route_reason: str | None = None
    # The sha256 (hex) of its files by name, as its job recorded them and promotion found them
    # (dropflow.vocabulary.digests): what serving and rollback check the bytes they load
    # against. Empty where promotion never verified them: such a version is not served.
    digests: dict[str, str] = Field(default_factory=dict)
    # When its files were marked retired (dropflow.promotion.retention): on S3 they then age out by
    # the
    # bucket's lifecycle rule. None: kept, its files never expire.
    retired_at: float | None = None


class Champion(BaseModel):
    model: str
    version: str
    previous: str | None = None
    since: float
    # The champion version's route, kept on the pointer so serving knows it without a read.
    route: Route | None = None
    revision: int = 0  # registry revision, the token for the next switch


class ChampionChange(BaseModel):
    """One switch of the champion pointer, kept as history (who, from what, why)."""

    model: str
    version: str
    previous: str | None = None
    action: Literal["promotion", "rollback"]
    reason: str = ""
    at: float


class Catalog:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def models(self) -> list[str]:
        """Every model dropflow knows (it had at least one job), sorted."""
        return [r.sk for r in self.registry.query(MODELS_PK)]

    def exists(self, model: str) -> bool:
        check_model_name(model)
        return self.registry.get(MODELS_PK, model) is not None

    def add_model(self, model: str) -> None:
        check_model_name(model)
        self.registry.put_if_absent(MODELS_PK, model, {"created_at": time.time()})

    def record_version(self, record: VersionRecord) -> VersionRecord:
        """Store (or overwrite) what is known about a version; idempotent."""
        self.add_model(record.model)
        self.registry.put(
            model_pk(record.model), f"VERSION#{record.version}", record.model_dump(mode="json")
        )
        return record

    def mark_retired(self, model: str, version: str, retired: bool) -> VersionRecord | None:
        """Set (now) or clear the version's `retired_at`; the record, or None if unknown.

        Compare-and-set on the record, so a decision written meanwhile is never overwritten;
        a record already in that state is returned unchanged (the first retirement time
        stays). Raises ConcurrentUpdate if the record kept changing under it.
        """
        pk, sk = model_pk(model), f"VERSION#{version}"
        for _ in range(_MARK_ROUNDS):
            rec = self.registry.get(pk, sk)
            if rec is None:
                return None
            current = VersionRecord.model_validate(rec.data)
            if (current.retired_at is not None) == retired:
                return current
            updated = current.model_copy(update={"retired_at": time.time() if retired else None})
            data = updated.model_dump(mode="json")
            if self.registry.compare_and_set(pk, sk, data, expected_revision=rec.revision):
                return updated
        raise ConcurrentUpdate(f"the record of {model} {version} kept changing; try again")

    def version(self, model: str, version: str) -> VersionRecord | None:
        rec = self.registry.get(model_pk(model), f"VERSION#{version}")
        return VersionRecord.model_validate(rec.data) if rec else None

    def versions(self, model: str) -> list[VersionRecord]:
        """All versions of the model, oldest first (versions sort by time)."""
        check_model_name(model)
        recs = self.registry.query(model_pk(model), sk_prefix="VERSION#")
        return [VersionRecord.model_validate(r.data) for r in recs]

    def champion_routes(self) -> list[Route | None]:
        """The route of every model's champion (models without one are left out)."""
        champions = (self.champion(model) for model in self.models())
        return [champion.route for champion in champions if champion is not None]

    def champion(self, model: str) -> Champion | None:
        check_model_name(model)
        rec = self.registry.get(model_pk(model), "CHAMPION")
        if rec is None:
            return None
        return Champion.model_validate({**rec.data, "revision": rec.revision})

    def switch_champion(
        self,
        model: str,
        version: str,
        *,
        expected: Champion | None,
        route: Route | None,
    ) -> bool:
        """Make `version` the champion if the pointer is still `expected` (None: no champion).

        The pointer carries the version's `route` (None for versions recorded before routing:
        served by the function). Returns False when another writer switched it first; the
        caller re-reads and decides.
        """
        data: dict[str, Any] = {
            "model": model,
            "version": version,
            "previous": expected.version if expected else None,
            "since": time.time(),
            "route": route,
        }
        if expected is None:
            return self.registry.put_if_absent(model_pk(model), "CHAMPION", data)
        return self.registry.compare_and_set(
            model_pk(model), "CHAMPION", data, expected_revision=expected.revision
        )

    def approved_before(self, model: str, version: str) -> VersionRecord | None:
        """The newest approved version older than `version` (versions sort by time)."""
        older = [r for r in self.versions(model) if r.version < version]
        approved = [r for r in older if r.decision == "approved"]
        return approved[-1] if approved else None

    def record_change(self, change: ChampionChange) -> ChampionChange:
        """Append a champion switch to the model's history (after the switch succeeded)."""
        sk = f"CHANGE#{change.at:017.6f}#{change.version}"
        self.registry.put(model_pk(change.model), sk, change.model_dump(mode="json"))
        return change

    def changes(self, model: str) -> list[ChampionChange]:
        """The champion's history, oldest first."""
        check_model_name(model)
        recs = self.registry.query(model_pk(model), sk_prefix="CHANGE#")
        return [ChampionChange.model_validate(r.data) for r in recs]
