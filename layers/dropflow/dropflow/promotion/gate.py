"""Promotion: decide whether a freshly published version becomes its model's champion.

The training job publishes `models/<model>/<version>/{model.onnx, reference.npz, card.json}`
(card last). Before anything is served, promotion re-checks the parity evidence with
onnxruntime alone: `reference.npz` holds the holdout inputs under `input` and the torch
outputs under the graph's output name (`probabilities` or `prediction`), and, from jobs
that publish it, the holdout labels under `target` (class ids, or values in the target's
units). A candidate that would break the champion's clients (a feature renamed, added,
removed, reordered or retyped, a category or null no longer accepted, other classes or task:
dropflow.promotion.compatibility) is rejected, naming each change, unless its spec allows
schema changes. So is one that does not beat the naive baseline its card records (primary
metric better, log loss no worse; `below_baseline`), the first version included. Then the
fair gate runs the candidate AND the champion on the candidate's
holdout rows (category codes translated to the champion's) and compares their primary metric
(dropflow.vocabulary.scoring); where that cannot be done (no `target`, different features or
classes, an unrunnable champion) it compares the metrics recorded on the cards and the reason
says why. The champion pointer is switched
with compare-and-set, the decision is recorded (a replayed event changes nothing), and a
"Model Promoted" / "Model Rejected" event is published.

Each version that passes parity also gets its route (dropflow.vocabulary.routing): `lambda`, or
`container` when it is too large for the predict function. The route is recorded with the
version and written on the champion pointer, and promoting a `container` version asks the
container tier to scale out, so that a server is on its way before the first request.

Before any of this, promotion checks the version's provenance
(dropflow.promotion.provenance): the card names a job of this model that recorded this version,
and card.json, model.onnx and reference.npz hash to the digests it recorded. Anything else (a
folder written by hand, a file replaced after publishing) is rejected, saying which. The
digests go on the version's record, for serving and rollback to check the bytes they load.

After each decision (and again on a replay) dropflow.promotion.retention marks the files of versions
that are no longer worth keeping as retired, and unmarks the champion's: on S3 the bucket's
lifecycle rule expires retired files, so old versions age out and the champion's never do.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from dropflow.errors import ConcurrentUpdate, UserInputError, brief
from dropflow.ports import ContainerTier, EventPublisher, ObjectNotFound, ObjectStore, Registry
from dropflow.promotion import compatibility
from dropflow.promotion.provenance import Untrusted, check_bytes, published_digests
from dropflow.promotion.retention import DEFAULT_KEEP, retain_or_explain
from dropflow.promotion.tier import fit_or_explain
from dropflow.records.catalog import Catalog, Champion, ChampionChange, VersionRecord
from dropflow.vocabulary import parity, scoring
from dropflow.vocabulary.card import (
    CARD_FILE,
    INPUT_NAME,
    PREDICTION,
    PROBABILITIES,
    Card,
    InvalidCard,
    artifact_key,
    card_key,
    parse_card,
    read_card,
)
from dropflow.vocabulary.events import PROMOTED, REJECTED
from dropflow.vocabulary.names import check_model_name, check_version
from dropflow.vocabulary.onnx_session import open_session, run_in_slices
from dropflow.vocabulary.routing import RouteDecision, RoutePolicy, decide_route
from dropflow.vocabulary.spec import ServingSection, read_spec

log = logging.getLogger(__name__)

# The holdout labels in reference.npz (absent from versions published before the fair gate).
TARGET_NAME = "target"

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
    metrics: dict[str, Any] = {}  # what the gate compared (see GateOutcome)
    route: Literal["lambda", "container"] | None = None  # where the version is served
    route_reason: str | None = None
    scale_out: str | None = None  # what the container tier did, when this version became champion
    # Versions whose files this decision retired (they age out) or took back
    # (dropflow.promotion.retention),
    # and why retention could not run, if it could not (the decision stands; the next run
    # finishes the marking).
    retired: list[str] = []
    unretired: list[str] = []
    retention_error: str | None = None
    replayed: bool = False  # True when the decision was already recorded (event delivered twice)


@dataclass
class GateOutcome:
    """The gate's reason to approve, and the numbers behind it.

    metrics: primary, candidate, champion (None without one), champion_version, basis
    ("holdout": both models scored on the candidate's holdout rows; "card": the cards'
    recorded values), rows (holdout basis), tolerance, higher_is_better.
    """

    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


class Rejected(Exception):
    """Internal: the candidate cannot be promoted; the message is the recorded reason."""

    def __init__(self, message: str, metrics: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metrics = metrics or {}


class NothingPublished(Rejected):
    """Internal: there is no card.json, so there is no version to decide on."""


def promote(
    model: str,
    version: str,
    store: ObjectStore,
    registry: Registry,
    events: EventPublisher | None = None,
    *,
    policy: RoutePolicy | None = None,
    tier: ContainerTier | None = None,
    keep_versions: int = DEFAULT_KEEP,
) -> PromotionResult:
    """Check `version` of `model` and make it the champion when it is sound and not worse.

    `policy` holds the routing thresholds (default: dropflow.vocabulary.routing's); `tier` is asked
    to
    scale out when a `container` version becomes champion (a failure is logged, and the
    decision stands: requests answer 503 until the tier has a server). After the decision,
    the files of versions other than the champion and the newest `keep_versions` other
    approved versions are marked retired (dropflow.promotion.retention; a failure is logged and
    reported in `retention_error`, and the decision stands).

    Returns the decision with its reason, and publishes it to `events` when it is new (not a
    replay); a failed publish is logged and never undoes the decision. A version that no job
    of `model` published with these very files, a missing or corrupt artifact or a parity
    failure is a rejection, never an exception (without a card.json nothing is recorded: there
    is no version yet). The decision is recorded, so a replay
    returns it. Raises InvalidName for a malformed model or version, and ConcurrentUpdate
    when the champion kept changing under it (the event can be retried).
    """
    check_model_name(model)
    check_version(version)
    catalog = Catalog(registry)

    recorded = catalog.version(model, version)
    if recorded is not None and recorded.decision != "pending":
        champion = catalog.champion(model)
        current = champion.version if champion else None
        result = PromotionResult(
            model=model,
            version=version,
            decision=recorded.decision,
            reason=recorded.reason or "",
            champion_before=current,
            champion_after=current,
            primary_metric=recorded.primary_metric,
            primary_value=recorded.primary_value,
            metrics=recorded.metrics,
            route=recorded.route,
            route_reason=recorded.route_reason,
            replayed=True,
        )
        # A replay asks again: the first delivery may have failed to reach the tier, or to
        # mark the files.
        return _settle(store, catalog, tier, keep_versions, result)

    card: Card | None = None
    digests: dict[str, str] = {}
    routed: RouteDecision | None = None
    try:
        card, digests = _load_card(store, registry, model, version)
        check_parity(card, store, digests)
        routed = route_for(card, store, policy)
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
        result = _record(
            catalog,
            model,
            version,
            card,
            "rejected",
            str(rejected),
            champion,
            champion,
            digests=digests,
        )
        return _announce(events, _settle(store, catalog, tier, keep_versions, result))

    for _ in range(MAX_SWITCH_ROUNDS):
        champion = catalog.champion(model)
        if champion is not None and champion.version == version:
            # A previous run switched the pointer but stopped before recording the decision.
            reason = "already the champion"
            result = _record(
                catalog,
                model,
                version,
                card,
                "approved",
                reason,
                champion,
                champion,
                None,
                routed,
                digests=digests,
            )
            return _announce(events, _settle(store, catalog, tier, keep_versions, result))
        try:
            outcome = gate(card, champion, store)
        except Rejected as rejected:
            result = _record(
                catalog,
                model,
                version,
                card,
                "rejected",
                str(rejected),
                champion,
                champion,
                rejected.metrics,
                routed,
                digests=digests,
            )
            return _announce(events, _settle(store, catalog, tier, keep_versions, result))
        # Switch first, record second: a crash in between leaves a pointer that a retry
        # recognises ("already the champion"), never an approval that was not applied.
        route = routed.route if routed else None
        if catalog.switch_champion(model, version, expected=champion, route=route):
            after = catalog.champion(model)
            catalog.record_change(
                ChampionChange(
                    model=model,
                    version=version,
                    previous=champion.version if champion else None,
                    action="promotion",
                    reason=outcome.reason,
                    at=after.since if after else time.time(),
                )
            )
            result = _record(
                catalog,
                model,
                version,
                card,
                "approved",
                outcome.reason,
                champion,
                after,
                outcome.metrics,
                routed,
                digests=digests,
            )
            return _announce(events, _settle(store, catalog, tier, keep_versions, result))
    raise ConcurrentUpdate(
        f"promotion of {model} {version}: the champion changed {MAX_SWITCH_ROUNDS} times while "
        "deciding; retry the event"
    )


# ---------------------------------------------------------------------- checks
def _load_card(
    store: ObjectStore, registry: Registry, model: str, version: str
) -> tuple[Card, dict[str, str]]:
    """The version's card, and the digests its job recorded; Rejected when no job of `model`
    published this version, or card.json is not the one it published, or is unsound."""
    key = card_key(model, version)
    try:
        raw = store.get(key)
    except ObjectNotFound:
        raise NothingPublished(f"card.json is missing under models/{model}/{version}/") from None
    try:
        card = parse_card(key, raw)
    except InvalidCard as exc:
        raise Rejected(f"card.json is not a valid model card: {exc.problem}") from None
    try:
        digests = published_digests(model, version, card.job_id, registry)
        check_bytes(CARD_FILE, raw, digests, card.job_id)
    except Untrusted as exc:
        raise Rejected(str(exc)) from None
    if card.model != model or card.version != version:
        raise Rejected(
            f"card.json names {card.model} {card.version} but lies under models/{model}/{version}/"
        )
    if card.task == "classification" and not card.classes:
        raise Rejected("card.json: a classification card must list its classes")
    if card.metrics.primary not in card.metrics.holdout:
        raise Rejected(f"card.json: primary metric {card.metrics.primary!r} has no holdout value")
    return card, digests


def _artifact(store: ObjectStore, card: Card, role: str, default: str) -> bytes:
    name = card.files.get(role, default)
    try:
        return store.get(artifact_key(card.model, card.version, name))
    except ObjectNotFound:
        raise Rejected(f"{name} is missing under models/{card.model}/{card.version}/") from None


def check_parity(card: Card, store: ObjectStore, digests: Mapping[str, str]) -> float:
    """Re-run the reference inputs through onnxruntime and compare with the torch outputs.

    The model and reference bytes read must hash to `digests` (file name -> sha256 hex, what
    the card's job recorded) before anything runs them. Returns the max abs difference;
    raises Rejected saying what does not hold.
    """
    if not card.parity.passed:
        raise Rejected("the training job's own parity check failed (card.parity.passed is false)")
    output = PROBABILITIES if card.task == "classification" else PREDICTION
    model_bytes = _artifact(store, card, "model", "model.onnx")
    reference_bytes = _artifact(store, card, "reference", "reference.npz")
    try:
        check_bytes(card.files.get("model", "model.onnx"), model_bytes, digests, card.job_id)
        check_bytes(
            card.files.get("reference", "reference.npz"), reference_bytes, digests, card.job_id
        )
        for role, name in family_files(card).items():
            check_bytes(name, _artifact(store, card, role, name), digests, card.job_id)
    except Untrusted as exc:
        raise Rejected(str(exc)) from None
    try:
        session = open_session(model_bytes)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        raise Rejected(f"model.onnx cannot be loaded by onnxruntime: {brief(exc)}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or output not in outputs:
        raise Rejected(
            f"model.onnx breaks the graph contract: inputs {inputs}, outputs {outputs}; "
            f"expected input {INPUT_NAME!r} and output {output!r}"
        )
    try:
        with np.load(io.BytesIO(reference_bytes), allow_pickle=False) as npz:
            x = np.asarray(npz[INPUT_NAME], dtype=card.input_dtype)
            expected = np.asarray(npz[output], dtype=np.float32)
    except Exception as exc:  # zip, format and key errors all mean unusable evidence
        raise Rejected(
            f"reference.npz is unreadable or lacks {INPUT_NAME!r}/{output!r}: {brief(exc)}"
        ) from None
    row_shape = card.input_row_shape
    if x.ndim != 1 + len(row_shape) or x.shape[0] == 0 or x.shape[1:] != row_shape:
        what = "the card's input" if card.input is not None else "the card's features"
        raise Rejected(
            f"reference.npz input has shape {list(x.shape)}; expected [rows>0, "
            f"{', '.join(map(str, row_shape))}] for {what}"
        )
    try:
        # In slices: a large holdout in one run would need gigabytes (onnx_session.SLICE_ROWS).
        actual = run_in_slices(session, output, x)
    except Exception as exc:
        raise Rejected(f"onnxruntime failed on the reference inputs: {brief(exc)}") from None
    # The training job's own rule (dropflow.vocabulary.parity), with the tolerance it recorded.
    verdict = parity.compare(card.task, (actual, expected), tolerance=card.parity.tolerance)
    if verdict.problem is not None:
        raise Rejected(f"parity: {verdict.problem}")
    return verdict.parity.max_abs_diff


def family_files(card: Card) -> dict[str, str]:
    """The files a family published beside model.onnx (a text model's tokenizer.json), role ->
    file name: every file the card names but the model, the reference and the curve. Their
    digests are recorded and checked like model.onnx's."""
    common = ("model", "reference", "curve")
    return {role: name for role, name in card.files.items() if role not in common}


def _input_difference(card: Card, incumbent: Card, store: ObjectStore) -> str | None:
    """Why the candidate's holdout input rows mean something else to the champion (another
    input section, or another tokenizer: the same token ids are other words), or None."""
    if card.input != incumbent.input:
        return "the versions' graphs take different inputs (the cards' `input` differ)"
    if card.tabular_features != incumbent.tabular_features:
        # A text model's columns beside the text: a category learnt shifts the codes, which
        # the holdout rows hold as the candidate encoded them.
        return "the versions encode their tabular columns differently (the cards' features differ)"
    for role, name in family_files(card).items():
        if incumbent.files.get(role) != name:
            return f"the champion has no {name}"
        try:
            same = _artifact(store, card, role, name) == _artifact(store, incumbent, role, name)
        except Rejected as exc:
            return str(exc)
        if not same:
            return f"the versions' {name} differ: the same input rows mean other things to each"
    return None


def promotion_tolerance(card: Card) -> float:
    """How much worse than the champion the candidate may be (the spec's promotion.tolerance)."""
    promotion = (card.model_extra or {}).get("promotion") or {}
    value = promotion.get("tolerance", 0.0) if isinstance(promotion, dict) else 0.0
    return float(value) if isinstance(value, int | float) and value >= 0 else 0.0


def gate(card: Card, champion: Champion | None, store: ObjectStore) -> GateOutcome:
    """The metric gate: why `card` may replace `champion`, or Rejected when it is worse, or
    when it does not beat the naive baseline its card records (first version included).

    Fair when it can be: both graphs scored on the candidate's holdout rows and labels.
    Otherwise the cards' recorded metrics, with the reason for the fallback in the reason.
    """
    metric, value = card.metrics.primary, card.metrics.primary_value
    tolerance = promotion_tolerance(card)
    numbers: dict[str, Any] = {
        "primary": metric,
        "candidate": value,
        "champion": None,
        "champion_version": champion.version if champion else None,
        "basis": "card",
        "tolerance": tolerance,
        "higher_is_better": card.metrics.higher_is_better,
    }
    below = below_baseline(card)
    if below is not None:
        numbers["baseline"] = dict(card.metrics.baseline)
        raise Rejected(below, numbers)
    if champion is None:
        return GateOutcome(f"first version of {card.model} ({metric} {value:.4g})", numbers)
    if champion.version > card.version:
        # Versions sort by publish time: a late or replayed event must not roll back.
        raise Rejected(f"older than the champion {champion.version}", numbers)
    try:
        incumbent = read_card(store, card.model, champion.version)
    except (ObjectNotFound, InvalidCard):
        # Nothing to compare with; a candidate that passed parity beats an unreadable champion.
        reason = f"champion {champion.version} has no readable card; {metric} {value:.4g}"
        return GateOutcome(reason, numbers)
    fit = compatibility.compare(card, incumbent)
    if fit.changes:
        numbers["schema_changes"] = fit.changes
        if not fit.allowed:
            raise Rejected(fit.refusal(card, incumbent), numbers)
    outcome = _against(card, champion, incumbent, store, numbers)
    if fit.changes:
        outcome.reason = f"{outcome.reason}; {fit.note}"
    return outcome


def below_baseline(card: Card) -> str | None:
    """Why `card`'s model is no better than the naive baseline the card records on the same
    holdout rows (the training rows' majority class with their class frequencies, or their
    mean), or None when it is better: its primary metric must beat the baseline's, and its
    log loss (classification) must be no worse. A model that does not is useless whatever its
    accuracy looks like. A metric the card has no baseline for is not compared."""
    metrics = card.metrics
    baseline, holdout, metric = metrics.baseline, metrics.holdout, metrics.primary
    problems = []
    if metric in baseline:
        value, naive = holdout[metric], baseline[metric]
        beats = value > naive if metrics.higher_is_better else value < naive
        if not beats:
            direction = "higher" if metrics.higher_is_better else "lower"
            problems.append(
                f"{metric} {value:.4g} does not beat the naive baseline's {naive:.4g} "
                f"({direction} is better)"
            )
    loss = "log_loss"
    # `not <=`: a NaN loss is worse too.
    if (
        metric != loss
        and loss in holdout
        and loss in baseline
        and not holdout[loss] <= baseline[loss]
    ):
        problems.append(
            f"{loss} {holdout[loss]:.4g} is worse than the naive baseline's "
            f"{baseline[loss]:.4g} (lower is better)"
        )
    if not problems:
        return None
    return (
        f"no better than the naive baseline on its {metrics.holdout_rows} holdout rows: "
        + "; ".join(problems)
    )


def _against(
    card: Card, champion: Champion, incumbent: Card, store: ObjectStore, numbers: dict[str, Any]
) -> GateOutcome:
    """The metric comparison with a champion whose card was read (see gate)."""
    metric, value, tolerance = (
        card.metrics.primary,
        card.metrics.primary_value,
        numbers["tolerance"],
    )
    fair = fair_scores(card, incumbent, store)
    if isinstance(fair, FairScores):
        numbers.update(
            basis="holdout", candidate=fair.candidate, champion=fair.champion, rows=fair.rows
        )
        where = f"on the same {fair.rows} holdout rows"
        if fair.left_out:
            numbers["rows_left_out"] = fair.left_out
            where += f" ({fair.left_out} left out: values the champion does not accept)"
        value, best, note = fair.candidate, fair.champion, ""
        if not math.isfinite(best):
            reason = (
                f"the champion {champion.version} gives a non-finite {metric} {where}; "
                f"{metric} {value:.4g}"
            )
            return GateOutcome(reason, numbers)
    else:
        where, note = "", f"; compared the cards' recorded metrics: {fair}"
        if metric not in incumbent.metrics.holdout:
            reason = (
                f"champion {champion.version} has no {metric} (the spec changed); newer spec wins"
                f"{note}"
            )
            return GateOutcome(reason, numbers)
        best = incumbent.metrics.holdout[metric]
        numbers["champion"] = best
    direction = "higher" if card.metrics.higher_is_better else "lower"
    comparison = (
        f"{metric} {value:.4g} vs champion {champion.version} {best:.4g} "
        f"({direction} is better, tolerance {tolerance:.3g}){note}"
    )
    verdict = f" {where}:" if where else ":"
    if not scoring.not_worse(metric, value, best, tolerance):
        raise Rejected(f"worse than the champion{verdict} {comparison}", numbers)
    return GateOutcome(f"not worse than the champion{verdict} {comparison}", numbers)


@dataclass(frozen=True)
class FairScores:
    candidate: float
    champion: float
    rows: int
    left_out: int = 0  # holdout rows the champion could not take (categories it never learnt)


def fair_scores(card: Card, incumbent: Card, store: ObjectStore) -> FairScores | str:
    """Both models' primary metric on the candidate's holdout rows, or why that cannot be done.

    Needs the labels in the candidate's reference.npz (`target`) and inputs both graphs read
    alike: the same features (names, order, kinds) and classes; category codes are translated
    to the champion's, and rows with values the champion does not accept are left out
    (dropflow.promotion.compatibility.champion_inputs).
    """
    metric = card.metrics.primary
    if incumbent.task != card.task:
        return f"the champion is a {incumbent.task} model, the candidate a {card.task} model"
    if not scoring.supports(card.task, metric):
        return f"{metric!r} cannot be computed from the holdout rows"
    mismatch = compatibility.encoding_mismatch(card, incumbent)
    if mismatch:
        return f"feature schemas differ ({mismatch})"
    if card.input is not None or incumbent.input is not None:
        different = _input_difference(card, incumbent, store)
        if different:
            return different
    reference = _artifact(store, card, "reference", "reference.npz")
    try:
        with np.load(io.BytesIO(reference), allow_pickle=False) as npz:
            if TARGET_NAME not in npz.files:
                return "reference.npz has no holdout target (published before fair scoring)"
            x = np.asarray(npz[INPUT_NAME], dtype=card.input_dtype)
            y = np.asarray(npz[TARGET_NAME])
    except Exception as exc:  # already read by check_parity; a race or a bad member
        return f"reference.npz is unreadable: {brief(exc)}"
    problem = scoring.check_labels(card.task, y, len(x), len(card.classes or []))
    if problem:
        return f"reference.npz {problem}"
    if card.input is not None:
        # The same input section and files (_input_difference): the rows mean the same to both.
        inputs = compatibility.ChampionInputs(x, np.ones(len(x), dtype=bool))
    else:
        inputs = compatibility.champion_inputs(card, incumbent, x)
    rows = inputs.accepted
    if not rows.any():
        return "the champion accepts none of the holdout rows (categories it never learnt)"
    candidate = _score(card, store, x[rows], y[rows])
    try:
        champion = _score(incumbent, store, inputs.x[rows], y[rows])
    except Rejected as exc:
        return f"the champion cannot be run: {exc}"
    kept = int(rows.sum())
    return FairScores(candidate=candidate, champion=champion, rows=kept, left_out=len(x) - kept)


def _score(card: Card, store: ObjectStore, x: np.ndarray, y: np.ndarray) -> float:
    """The card's primary metric of its graph on (x, y); Rejected if the graph cannot run."""
    output = PROBABILITIES if card.task == "classification" else PREDICTION
    model_bytes = _artifact(store, card, "model", "model.onnx")
    try:
        session = open_session(model_bytes)
        outputs = run_in_slices(session, output, x)
    except Exception as exc:
        raise Rejected(f"{card.version} model.onnx: {brief(exc)}") from None
    outputs = np.asarray(outputs, dtype=np.float64)
    if not np.all(np.isfinite(outputs)):
        return math.nan
    return scoring.score(card.task, card.metrics.primary, y, outputs)


# ---------------------------------------------------------------------- routing
def route_for(card: Card, store: ObjectStore, policy: RoutePolicy | None = None) -> RouteDecision:
    """Where the version of `card` is served: by its model.onnx size and the spec's `serving`
    section (the card's copy when the training job wrote one, else the dataset's current
    dropflow.yaml; an unreadable spec routes by size, and the reason says so)."""
    name = card.files.get("model", "model.onnx")
    info = store.head(artifact_key(card.model, card.version, name))
    size = info.size if info is not None else card.model_bytes
    serving, note = _serving_section(card, store)
    decision = decide_route(
        size,
        policy,
        override=serving.route if serving else None,
        memory_mb=serving.memory_mb if serving else None,
    )
    if note:
        return RouteDecision(
            decision.route, f"{decision.reason}; {note}", decision.model_mb, decision.memory_mb
        )
    return decision


def _serving_section(card: Card, store: ObjectStore) -> tuple[ServingSection | None, str]:
    copied = (card.model_extra or {}).get("serving")
    try:
        if isinstance(copied, dict):
            return ServingSection.model_validate(copied), ""
        return read_spec(store, card.model).serving, ""
    except (UserInputError, ValidationError) as exc:
        return None, f"the spec's serving section was ignored: {brief(exc)}"


def _settle(
    store: ObjectStore,
    catalog: Catalog,
    tier: ContainerTier | None,
    keep: int,
    result: PromotionResult,
) -> PromotionResult:
    """The housekeeping after a decision: the retention rule, then the container tier."""
    return _fit_tier(tier, catalog, _retain(store, catalog, keep, result))


def _fit_tier(
    tier: ContainerTier | None, catalog: Catalog, result: PromotionResult
) -> PromotionResult:
    """When this version is the champion, size the container tier to what the champions now
    need (dropflow.serving.forwarding.fit_to_champions): a server while any is routed `container`,
    none once no champion is. A rejected version changes nothing."""
    if tier is None or result.champion_after != result.version:
        return result
    done = fit_or_explain(tier, catalog.champion_routes())
    return result.model_copy(update={"scale_out": done})


def _retain(
    store: ObjectStore, catalog: Catalog, keep: int, result: PromotionResult
) -> PromotionResult:
    """Apply the retention rule after a decision; a failure leaves the decision standing."""
    done = retain_or_explain(result.model, store, catalog, keep)
    return result.model_copy(
        update={"retired": done.retired, "unretired": done.unretired, "retention_error": done.error}
    )


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
    metrics: dict[str, Any] | None = None,
    routed: RouteDecision | None = None,
    *,
    digests: dict[str, str] | None = None,
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
            metrics=metrics or {},
            route=routed.route if routed else None,
            route_reason=routed.reason if routed else None,
            digests=digests or {},
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
        metrics=metrics or {},
        route=routed.route if routed else None,
        route_reason=routed.reason if routed else None,
    )


def _announce(events: EventPublisher | None, result: PromotionResult) -> PromotionResult:
    """Publish a new decision; the decision stands even when the event cannot be delivered."""
    if events is None:
        return result
    detail = result.model_dump(mode="json", exclude={"replayed"})
    try:
        events.publish(PROMOTED if result.decision == "approved" else REJECTED, detail)
    except Exception as exc:  # an unreachable bus must not turn a decision into a failure
        log.warning(
            "could not publish the %s event for %s %s: %s",
            result.decision,
            result.model,
            result.version,
            exc,
        )
    return result


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
