"""The model registry as operators use it: list versions, show one, roll the champion back.

Rollback switches the champion pointer with the same compare-and-set as promotion, so it can
never interleave with a promotion, and records the switch in the champion's history. Serving
follows the pointer within its TTL, as it does after a promotion.

A rollback target whose files were retired (dropflow.promotion.retention) is taken back first: its
files are unmarked before the pointer moves, so the champion never points at files about to
expire; if they have already aged out, the rollback is refused and says so. After the switch
the retention rule runs again (an older version may fall out of the kept set).

A rollback target is served only if its files are still the ones its job published: its
card.json, model.onnx and reference.npz must hash to the digests promotion verified and kept
on its record (dropflow.promotion.provenance); a file replaced since, or a version never
verified, is refused.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from dropflow.errors import ConcurrentUpdate, DropflowError, NotFoundError
from dropflow.ports import ContainerTier, ObjectNotFound, ObjectStore, Registry
from dropflow.promotion.gate import Rejected, check_parity
from dropflow.promotion.provenance import Untrusted, check_bytes
from dropflow.promotion.retention import (
    DEFAULT_KEEP,
    mark_version,
    missing_files,
    retain_or_explain,
)
from dropflow.promotion.tier import fit_or_explain
from dropflow.records.catalog import Catalog, ChampionChange, VersionRecord
from dropflow.vocabulary.card import (
    CARD_FILE,
    InvalidCard,
    artifact_key,
    card_key,
    parse_card,
    read_card,
    version_prefix,
)
from dropflow.vocabulary.names import check_model_name, check_version


class RollbackRefused(DropflowError):
    """The rollback target cannot be served (the message says why)."""


class RollbackResult(BaseModel):
    model: str
    champion_before: str
    champion_after: str
    reason: str
    changed: bool = True
    # Versions whose files the rollback retired or took back (dropflow.promotion.retention).
    retired: list[str] = []
    unretired: list[str] = []
    retention_error: str | None = None
    tier: str | None = None  # what the container tier did (dropflow.serving.forwarding)


def list_versions(model: str, registry: Registry) -> list[dict[str, Any]]:
    """Every version of `model`, oldest first, with its decision and whether it is champion."""
    catalog = _known(model, registry)
    champion = catalog.champion(model)
    current = champion.version if champion else None
    return [
        {**record.model_dump(mode="json"), "champion": record.version == current}
        for record in catalog.versions(model)
    ]


def show_version(
    model: str, store: ObjectStore, registry: Registry, version: str | None = None
) -> dict[str, Any]:
    """A version's card and decision (default: the champion's), plus the champion history."""
    catalog = _known(model, registry)
    champion = catalog.champion(model)
    if version is None:
        if champion is None:
            raise NotFoundError(f"model {model!r} has no champion yet; pass --version")
        version = champion.version
    check_version(version)
    record = catalog.version(model, version)
    if record is None:
        raise NotFoundError(_no_such_version(model, version))
    try:
        card: dict[str, Any] | None = read_card(store, model, version).model_dump(mode="json")
    except (ObjectNotFound, InvalidCard):
        card = None
    return {
        "model": model,
        "version": version,
        "champion": champion is not None and champion.version == version,
        "record": record.model_dump(mode="json"),
        "card": card,
        "history": [c.model_dump(mode="json") for c in catalog.changes(model)],
    }


def rollback(
    model: str,
    store: ObjectStore,
    registry: Registry,
    to_version: str | None = None,
    *,
    keep_versions: int = DEFAULT_KEEP,
    tier: ContainerTier | None = None,
) -> RollbackResult:
    """Make an earlier sound version the champion again.

    Without `to_version`: the version the champion replaced (the pointer's `previous`), else
    the newest approved version older than the champion. With it: that version, which must
    be recorded and either approved or (rejected by the metric gate only) still pass the
    parity re-check; it is then recorded as approved, so that serving accepts it. Either
    way its files must still hash to the digests promotion verified against its job.
    A retired target is taken back (its files unmarked) before the switch; one whose files
    have aged out is refused. After the switch the retention rule runs with `keep_versions`,
    and `tier` is sized to the champions (a server if the restored version is routed to the
    container, none once no champion is).
    Raises NotFoundError/RollbackRefused with the reason, ConcurrentUpdate if the champion
    changed meanwhile (run it again).
    """
    catalog = _known(model, registry)
    champion = catalog.champion(model)
    if champion is None:
        raise RollbackRefused(f"model {model!r} has no champion: nothing to roll back")
    if to_version is None:
        target = champion.previous or _older_approved(catalog, model, champion.version)
        how = "previous champion"
    else:
        check_version(to_version)
        target, how = to_version, "requested version"
    if target == champion.version:
        return RollbackResult(
            model=model,
            champion_before=target,
            champion_after=target,
            reason=f"{target} is already the champion",
            changed=False,
        )
    record = catalog.version(model, target)
    if record is None:
        raise NotFoundError(_no_such_version(model, target))
    was_retired = record.retired_at is not None
    record = _take_back(catalog, store, record)
    try:
        note = _check_servable(catalog, store, record)
        reason = f"rollback from {champion.version} to the {how} {target}{note}"
        if not catalog.switch_champion(model, target, expected=champion, route=record.route):
            raise ConcurrentUpdate(
                f"the champion of {model} changed while rolling back; run the rollback again"
            )
    except Exception:
        retain_or_explain(model, store, catalog, keep_versions)  # not switched: re-retire it
        raise
    after = catalog.champion(model)
    catalog.record_change(
        ChampionChange(
            model=model,
            version=target,
            previous=champion.version,
            action="rollback",
            reason=reason,
            at=after.since if after else time.time(),
        )
    )
    done = retain_or_explain(model, store, catalog, keep_versions)
    unretired = done.unretired
    if was_retired and target not in unretired:
        unretired = [target, *unretired]
    return RollbackResult(
        model=model,
        champion_before=champion.version,
        champion_after=target,
        reason=reason,
        retired=done.retired,
        unretired=unretired,
        retention_error=done.error,
        tier=None if tier is None else fit_or_explain(tier, catalog.champion_routes()),
    )


def _take_back(catalog: Catalog, store: ObjectStore, record: VersionRecord) -> VersionRecord:
    """Unmark the target's files before it is served, and its record; the record as it now
    stands. Refuses if the files have aged out.

    Unmarked first and checked second, so that nothing can expire between the check and the
    switch. Files of a retired version found incomplete are marked again (they are of no use
    any more, and should finish ageing out).
    """
    model, version = record.model, record.version
    mark_version(store, model, version, retired=False)
    gone = missing_files(store, model, version)
    if gone:
        where = f"{', '.join(gone)} missing under {version_prefix(model, version)}"
        if record.retired_at is None:
            raise RollbackRefused(f"cannot roll back {model} to {version}: {where}")
        mark_version(store, model, version, retired=True)
        since = time.strftime("%Y-%m-%d", time.gmtime(record.retired_at))
        raise RollbackRefused(
            f"cannot roll back {model} to {version}: it was retired on {since} and its files "
            f"have aged out ({where}); roll back to a kept version (`dropflow models list "
            f"{model}`)"
        )
    return catalog.mark_retired(model, version, False) or record


def _check_servable(catalog: Catalog, store: ObjectStore, record: VersionRecord) -> str:
    """'' for an approved version whose files are still its job's; re-checks parity
    otherwise. Refuses a version whose files differ from the digests on its record."""
    model, version = record.model, record.version
    if not record.digests:
        was = f"{record.decision} ({record.reason})" if record.reason else record.decision
        raise RollbackRefused(
            f"cannot roll back {model} to {version}: its files were never matched to the job "
            f"that published them (it was {was}), so it is not served"
        )
    key = card_key(model, version)
    try:
        raw = store.get(key)
        card = parse_card(key, raw)
    except ObjectNotFound:
        raise RollbackRefused(
            f"version {version!r} of {model} has no card.json any more "
            "(its files aged out?): cannot serve it"
        ) from None
    except InvalidCard:
        raise RollbackRefused(f"version {version!r} of {model} has an invalid card.json") from None
    try:
        check_bytes(CARD_FILE, raw, record.digests, record.job_id)
        if record.decision == "approved":
            names = (
                card.files.get("model", "model.onnx"),
                card.files.get("reference", "reference.npz"),
            )
            for name in names:
                data = store.get(artifact_key(model, version, name))
                check_bytes(name, data, record.digests, record.job_id)
    except ObjectNotFound as exc:
        raise RollbackRefused(f"cannot roll back {model} to {version}: {exc}") from None
    except Untrusted as exc:
        raise RollbackRefused(f"cannot roll back {model} to {version}: {exc}") from None
    if record.decision == "approved":
        return ""
    try:
        check_parity(card, store, record.digests)
    except Rejected as exc:
        raise RollbackRefused(
            f"version {record.version!r} of {record.model} was {record.decision} and fails "
            f"the parity re-check: {exc}"
        ) from None
    was = f"{record.decision} ({record.reason})" if record.reason else record.decision
    catalog.record_version(
        record.model_copy(
            update={
                "decision": "approved",
                "reason": f"approved by rollback (parity re-checked); was {was}",
                "decided_at": time.time(),
            }
        )
    )
    return f"; it was {was}, parity re-checked"


def _older_approved(catalog: Catalog, model: str, current: str) -> str:
    older = catalog.approved_before(model, current)
    if older is None:
        raise RollbackRefused(
            f"model {model!r}: no approved version older than the champion {current}"
        )
    return older.version


def _known(model: str, registry: Registry) -> Catalog:
    check_model_name(model)
    catalog = Catalog(registry)
    if not catalog.exists(model):
        raise NotFoundError(f"unknown model {model!r}")
    return catalog


def _no_such_version(model: str, version: str) -> str:
    return f"model {model!r} has no version {version!r} (`dropflow models list {model}`)"
