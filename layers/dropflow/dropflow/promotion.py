"""Promotion: decide whether a freshly published version becomes its model's champion.

The training job publishes `models/<model>/<version>/{model.onnx, reference.npz, card.json}`
(card last). Before anything is served, promotion re-checks the parity evidence with
onnxruntime alone: `reference.npz` holds the holdout inputs under `input` and the torch
outputs under the graph's output name (`probabilities` or `prediction`). Then a minimal
metric gate compares the candidate with the champion, and the champion pointer is switched
with compare-and-set. The decision is recorded, so a replayed event changes nothing.
"""

from __future__ import annotations

import io
import time
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from dropflow.card import INPUT_NAME, PREDICTION, PROBABILITIES, Card, artifact_key, card_key
from dropflow.catalog import Catalog, Champion, VersionRecord
from dropflow.jobs import ConcurrentUpdate
from dropflow.names import check_model_name, check_version
from dropflow.ports import ObjectNotFound, ObjectStore, Registry

# Compare-and-set rounds before giving up; each lost round means another version just won.
MAX_SWITCH_ROUNDS = 5


def card_location(key: str) -> tuple[str, str] | None:
    """(model, version) for a key `models/<model>/<version>/card.json`, else None.

    The names are not checked here: promote() rejects malformed ones with InvalidName.
    """
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "models" and parts[3] == "card.json":
        return parts[1], parts[2]
    return None


class PromotionResult(BaseModel):
    """What promotion decided for one version, and the champion around the decision."""

    model: str
    version: str
    decision: Literal["approved", "rejected"]
    reason: str
    champion_before: str | None
    champion_after: str | None
    primary_metric: str | None = None
    primary_value: float | None = None
    replayed: bool = False  # True when the decision was already recorded (event delivered twice)


class Rejected(Exception):
    """Internal: the candidate cannot be promoted; the message is the recorded reason."""


class NothingPublished(Rejected):
    """Internal: there is no card.json, so there is no version to decide on."""


def promote(model: str, version: str, store: ObjectStore, registry: Registry) -> PromotionResult:
    """Check `version` of `model` and make it the champion when it is sound and not worse.

    Returns the decision with its reason; a missing or corrupt artifact or a parity failure is
    a rejection, never an exception (without a card.json nothing is recorded: there is no
    version yet). The decision is recorded, so a replay returns it. Raises InvalidName for a
    malformed model or version, and ConcurrentUpdate when the champion kept changing under
    it (the event can be retried).
    """
    check_model_name(model)
    check_version(version)
    catalog = Catalog(registry)

    recorded = catalog.version(model, version)
    if recorded is not None and recorded.decision != "pending":
        champion = catalog.champion(model)
        current = champion.version if champion else None
        return PromotionResult(
            model=model,
            version=version,
            decision=recorded.decision,
            reason=recorded.reason or "",
            champion_before=current,
            champion_after=current,
            primary_metric=recorded.primary_metric,
            primary_value=recorded.primary_value,
            replayed=True,
        )

    card: Card | None = None
    try:
        card = _load_card(store, model, version)
        check_parity(card, store)
    except NothingPublished as missing:
        # No card, no version: answer without recording anything (nor making the model known),
        # so a stray or early event cannot block the version when its card does arrive.
        champion = catalog.champion(model)
        current = champion.version if champion else None
        return PromotionResult(
            model=model,
            version=version,
            decision="rejected",
            reason=str(missing),
            champion_before=current,
            champion_after=current,
        )
    except Rejected as rejected:
        champion = catalog.champion(model)
        return _record(catalog, model, version, card, "rejected", str(rejected), champion, champion)

    for _ in range(MAX_SWITCH_ROUNDS):
        champion = catalog.champion(model)
        if champion is not None and champion.version == version:
            # A previous run switched the pointer but stopped before recording the decision.
            reason = "already the champion"
            return _record(catalog, model, version, card, "approved", reason, champion, champion)
        try:
            reason = gate(card, champion, store)
        except Rejected as rejected:
            reason = str(rejected)
            return _record(catalog, model, version, card, "rejected", reason, champion, champion)
        # Switch first, record second: a crash in between leaves a pointer that a retry
        # recognises ("already the champion"), never an approval that was not applied.
        if catalog.switch_champion(model, version, expected=champion):
            after = catalog.champion(model)
            return _record(catalog, model, version, card, "approved", reason, champion, after)
    raise ConcurrentUpdate(
        f"promotion of {model} {version}: the champion changed {MAX_SWITCH_ROUNDS} times while "
        "deciding; retry the event"
    )


# ---------------------------------------------------------------------- checks
def _load_card(store: ObjectStore, model: str, version: str) -> Card:
    try:
        raw = store.get(card_key(model, version))
    except ObjectNotFound:
        raise NothingPublished(f"card.json is missing under models/{model}/{version}/") from None
    try:
        card = Card.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "card"
        raise Rejected(f"card.json is not a valid model card: {where}: {first['msg']}") from None
    if card.model != model or card.version != version:
        raise Rejected(
            f"card.json names {card.model} {card.version} but lies under models/{model}/{version}/"
        )
    if card.task == "classification" and not card.classes:
        raise Rejected("card.json: a classification card must list its classes")
    if card.metrics.primary not in card.metrics.holdout:
        raise Rejected(f"card.json: primary metric {card.metrics.primary!r} has no holdout value")
    return card


def _artifact(store: ObjectStore, card: Card, role: str, default: str) -> bytes:
    name = card.files.get(role, default)
    try:
        return store.get(artifact_key(card.model, card.version, name))
    except ObjectNotFound:
        raise Rejected(f"{name} is missing under models/{card.model}/{card.version}/") from None


def check_parity(card: Card, store: ObjectStore) -> float:
    """Re-run the reference inputs through onnxruntime and compare with the torch outputs.

    Returns the max abs difference; raises Rejected saying what does not hold.
    """
    # Imported here: promotion is the only caller of this module that needs the runtime.
    import onnxruntime as ort

    if not card.parity.passed:
        raise Rejected("the training job's own parity check failed (card.parity.passed is false)")
    output = PROBABILITIES if card.task == "classification" else PREDICTION
    model_bytes = _artifact(store, card, "model", "model.onnx")
    reference_bytes = _artifact(store, card, "reference", "reference.npz")
    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        raise Rejected(f"model.onnx cannot be loaded by onnxruntime: {_short(exc)}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or output not in outputs:
        raise Rejected(
            f"model.onnx breaks the graph contract: inputs {inputs}, outputs {outputs}; "
            f"expected input {INPUT_NAME!r} and output {output!r}"
        )
    try:
        with np.load(io.BytesIO(reference_bytes), allow_pickle=False) as npz:
            x = np.asarray(npz[INPUT_NAME], dtype=np.float32)
            expected = np.asarray(npz[output], dtype=np.float32)
    except Exception as exc:  # zip, format and key errors all mean unusable evidence
        raise Rejected(
            f"reference.npz is unreadable or lacks {INPUT_NAME!r}/{output!r}: {_short(exc)}"
        ) from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(card.features):
        raise Rejected(
            f"reference.npz input has shape {list(x.shape)}; expected [rows>0, "
            f"{len(card.features)}] for the card's features"
        )
    try:
        (actual,) = session.run([output], {INPUT_NAME: x})
    except Exception as exc:
        raise Rejected(f"onnxruntime failed on the reference inputs: {_short(exc)}") from None
    actual = np.asarray(actual, dtype=np.float32)
    if card.task == "regression":
        actual, expected = actual.reshape(-1), expected.reshape(-1)
    if actual.shape != expected.shape:
        raise Rejected(
            f"parity: onnxruntime output shape {list(actual.shape)} differs from the reference "
            f"{list(expected.shape)}"
        )
    if not np.all(np.isfinite(actual)):
        raise Rejected("parity: onnxruntime produced NaN or infinite outputs")
    diff = float(np.max(np.abs(actual - expected)))
    tolerance = card.parity.tolerance
    # `not <=` also rejects a NaN difference (non-finite reference outputs).
    if not diff <= tolerance:
        raise Rejected(f"parity: max abs diff {diff:.3g} exceeds the tolerance {tolerance:.3g}")
    if card.task == "classification" and not np.array_equal(
        actual.argmax(axis=1), expected.argmax(axis=1)
    ):
        raise Rejected("parity: onnxruntime and torch disagree on the predicted class")
    return diff


def promotion_tolerance(card: Card) -> float:
    """How much worse than the champion the candidate may be (the spec's promotion.tolerance)."""
    promotion = (card.model_extra or {}).get("promotion") or {}
    value = promotion.get("tolerance", 0.0) if isinstance(promotion, dict) else 0.0
    return float(value) if isinstance(value, int | float) and value >= 0 else 0.0


def gate(card: Card, champion: Champion | None, store: ObjectStore) -> str:
    """The metric gate: the reason for approving `card`, or Rejected when it is worse."""
    metric, value = card.metrics.primary, card.metrics.primary_value
    if champion is None:
        return f"first version of {card.model} ({metric} {value:.4g})"
    if champion.version > card.version:
        # Versions sort by publish time: a late or replayed event must not roll back.
        raise Rejected(f"older than the champion {champion.version}")
    try:
        incumbent = Card.model_validate_json(store.get(card_key(card.model, champion.version)))
    except (ObjectNotFound, ValidationError):
        # Nothing to compare with; a candidate that passed parity beats an unreadable champion.
        return f"champion {champion.version} has no readable card; {metric} {value:.4g}"
    if metric not in incumbent.metrics.holdout:
        return f"champion {champion.version} has no {metric} (the spec changed); newer spec wins"
    best = incumbent.metrics.holdout[metric]
    tolerance = promotion_tolerance(card)
    if card.metrics.higher_is_better:
        not_worse, direction = value >= best - tolerance, "higher"
    else:
        not_worse, direction = value <= best + tolerance, "lower"
    comparison = (
        f"{metric} {value:.4g} vs champion {champion.version} {best:.4g} "
        f"({direction} is better, tolerance {tolerance:.3g})"
    )
    if not not_worse:
        raise Rejected(f"worse than the champion: {comparison}")
    return f"not worse than the champion: {comparison}"


# ---------------------------------------------------------------------- recording
def _record(
    catalog: Catalog,
    model: str,
    version: str,
    card: Card | None,
    decision: Literal["approved", "rejected"],
    reason: str,
    before: Champion | None,
    after: Champion | None,
) -> PromotionResult:
    metric = card.metrics.primary if card else None
    value = card.metrics.holdout.get(metric) if card and metric else None
    catalog.record_version(
        VersionRecord(
            model=model,
            version=version,
            job_id=card.job_id if card else "",
            decision=decision,
            reason=reason,
            primary_metric=metric,
            primary_value=value,
            published_at=_epoch(card.created_at) if card else None,
            decided_at=time.time(),
        )
    )
    return PromotionResult(
        model=model,
        version=version,
        decision=decision,
        reason=reason,
        champion_before=before.version if before else None,
        champion_after=after.version if after else None,
        primary_metric=metric,
        primary_value=value,
    )


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
