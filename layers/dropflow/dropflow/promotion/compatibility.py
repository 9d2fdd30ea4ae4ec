"""Whether a candidate can replace the champion without breaking the champion's clients.

Clients send rows the champion's card describes and read answers it describes
(dropflow.vocabulary.card; dropflow.serving.service checks the rows against it):
- rows sent as objects name every feature and only those: a feature renamed, added or removed
  makes every such request a 422;
- rows sent as lists give the values in the card's feature order: reordered features would
  take each other's values, silently;
- a feature takes one kind of value, a number or one of its categories, and null only when it
  is nullable: a feature of another kind, or one that no longer knows a category or null the
  champion accepted, turns requests that worked into 422s (under the candidate's
  `serving.unknown_categories: reject`) or into predictions made with the value unknown, with a
  warning (under `encode`, the default);
- a champion that answers unseen categories with a warning (`encode`) and a candidate that
  refuses them (`reject`) turn requests that worked into 422s;
- a classifier answers one probability per class, in the card's class order, and labels from
  its classes: other classes (added, removed, reordered or of another type) change what
  clients read; another task changes the answer's shape altogether.

Any of these is a breaking change. What stays compatible: categories learnt from new data (the
candidate accepts every value the champion did, and more), null newly accepted, and all that
clients never see (metrics, network, training). A breaking change is promoted only with the
data owner's consent, the spec's `promotion: {allow_schema_change: true}`, which the training
job copies onto the candidate's card.

For the fair gate (dropflow.promotion.gate), `champion_inputs` turns the candidate's holdout
rows into the champion's input encoding where the two differ only compatibly (category codes
shift when a category is learnt), so that both models are scored on the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropflow.vocabulary.card import ENCODE, MISSING_CATEGORY, REJECT, Card, Feature
from dropflow.vocabulary.datasets import SPEC_FILE, dataset_prefix

# Lists longer than this are summed up (what was added and removed) rather than spelled out.
MAX_LISTED = 20
# At most this many values are named per difference; the rest are counted.
MAX_NAMED = 10
# At most this many differences are named (the reason travels in an event and a registry
# item, both of bounded size); the rest are counted.
MAX_CHANGES = 20


@dataclass(frozen=True)
class Compatibility:
    """How a candidate's card differs from the champion's in ways its clients would notice."""

    changes: list[str]  # each breaking change in words; empty when the clients are safe
    allowed: bool  # the candidate's spec consents to breaking changes (allow_schema_change)

    def refusal(self, candidate: Card, champion: Card) -> str:
        """The rejection reason: every change, and what the data owner can do about it."""
        spec = f"{dataset_prefix(candidate.model)}{SPEC_FILE}"
        return (
            f"would break the clients of the champion {champion.version}: "
            f"{'; '.join(self.changes)}. If the data is wrong (a file cut off, a column renamed "
            f"by mistake), fix it under {dataset_prefix(candidate.model)}; if the change is "
            f"meant, add `promotion: {{allow_schema_change: true}}` to {spec} (saving it "
            "retrains) and tell the clients"
        )

    @property
    def note(self) -> str:
        """What an approval's reason adds when the spec allowed breaking changes."""
        return f"the spec allows its schema change: {'; '.join(self.changes)}"


def compare(candidate: Card, champion: Card) -> Compatibility:
    """The breaking changes from `champion` to `candidate`, and whether the candidate's spec
    allows them (see the module docstring for what counts)."""
    changes: list[str] = []
    if candidate.task != champion.task:
        changes.append(
            f"the task would change from {champion.task} to {candidate.task}, and with it "
            "what every answer holds"
        )
    changes += _feature_changes(candidate, champion)
    if (
        champion.unknown_categories == ENCODE
        and candidate.unknown_categories == REJECT
        and any(f.dtype == "category" for f in candidate.features)
    ):
        changes.append(
            "a category value the training rows never had would be refused (422) under the "
            "spec's serving.unknown_categories: reject, where the champion answers it with a "
            "warning"
        )
    if candidate.task == champion.task == "classification":
        changes += _class_changes(candidate.classes or [], champion.classes or [])
    if len(changes) > MAX_CHANGES:
        changes = [
            *changes[: MAX_CHANGES - 1],
            f"and {len(changes) - MAX_CHANGES + 1} more changes",
        ]
    return Compatibility(changes, allows_schema_change(candidate))


def allows_schema_change(card: Card) -> bool:
    """Whether the spec that trained `card` set `promotion.allow_schema_change: true`."""
    promotion = (card.model_extra or {}).get("promotion")
    return isinstance(promotion, dict) and promotion.get("allow_schema_change") is True


# ---------------------------------------------------------------------- features
def _feature_changes(candidate: Card, champion: Card) -> list[str]:
    new = {f.name: f for f in candidate.features}
    old = {f.name: f for f in champion.features}
    changes = [f"feature {name!r} is gone" for name in champion.feature_names if name not in new]
    changes += [f"feature {name!r} is new" for name in candidate.feature_names if name not in old]
    kept_before = [name for name in champion.feature_names if name in new]
    kept_after = [name for name in candidate.feature_names if name in old]
    if kept_before != kept_after:
        if len(kept_before) <= MAX_LISTED:
            order = f"from {_names(kept_before)} to {_names(kept_after)}"
        else:
            first = next(
                i for i, (a, b) in enumerate(zip(kept_before, kept_after, strict=True)) if a != b
            )
            order = f"(first at position {first + 1}: {kept_before[first]!r} before, "
            order += f"{kept_after[first]!r} now)"
        changes.append(
            f"the features would be reordered {order} (rows sent as lists would give values "
            "to the wrong features)"
        )
    encodes = candidate.unknown_categories == ENCODE
    for name in kept_before:
        changes += _one_feature(new[name], old[name], encodes)
    return changes


def _one_feature(new: Feature, old: Feature, encodes: bool) -> list[str]:
    """The breaking changes of one feature; `encodes`: the candidate predicts with a category
    value it does not know (as unknown, with a warning) rather than refuse it."""
    name = new.name
    if new.dtype != old.dtype:
        return [f"feature {name!r} would be a {new.dtype} instead of a {old.dtype}"]
    changes = []
    unknown = encodes and new.dtype == "category"
    if old.nullable and not new.nullable:
        if unknown:
            changes.append(
                f"feature {name!r} would no longer know null, which the champion accepts (it "
                "would be predicted as unknown, with a warning)"
            )
        else:
            changes.append(f"feature {name!r} would refuse null, which the champion accepts")
    if new.dtype == "category":
        known = {category_key(c) for c in new.categories or []}
        lost = [
            c
            for c in old.categories or []
            if c != MISSING_CATEGORY and category_key(c) not in known
        ]
        if lost and unknown:
            changes.append(
                f"feature {name!r} would no longer know {_count(lost, 'category', 'categories')} "
                f"the champion accepts (they would be predicted as unknown, with a warning): "
                f"{_values(lost)}"
            )
        elif lost:
            changes.append(
                f"feature {name!r} would refuse {_count(lost, 'category', 'categories')} the "
                f"champion accepts: {_values(lost)}"
            )
    return changes


def category_key(value: bool | int | str) -> tuple[str, Any]:
    """A category as clients name it: a boolean, or text (the CSV's `3` and Parquet's 3 are
    the same value to a client; dropflow.serving.service matches values the same way)."""
    return ("bool", value) if isinstance(value, bool) else ("text", str(value))


# ---------------------------------------------------------------------- classes
def _class_key(value: Any) -> tuple[str, Any]:
    # What a client reads in JSON: true is not 1, "1" is not 1, 1.0 is 1.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return (type(value).__name__, value)


def _class_changes(new: list[Any], old: list[Any]) -> list[str]:
    if [_class_key(c) for c in new] == [_class_key(c) for c in old]:
        return []
    if max(len(new), len(old)) <= MAX_LISTED:
        quote = not all(isinstance(c, str) for c in [*new, *old])
        return [f"classes would change from {_classes(old, quote)} to {_classes(new, quote)}"]
    before, after = {_class_key(c) for c in old}, {_class_key(c) for c in new}
    added = [c for c in new if _class_key(c) not in before]
    removed = [c for c in old if _class_key(c) not in after]
    parts = [f"new {_values(added)}"] if added else []
    parts += [f"gone {_values(removed)}"] if removed else []
    if not parts:
        parts = ["the same classes in another order or of another type"]
    return [f"classes would change from {len(old)} to {len(new)}: {'; '.join(parts)}"]


def _classes(values: list[Any], quote: bool) -> str:
    # Plain words read best ([setosa, ver]); quotes only where a type could be mistaken.
    return "[" + ", ".join(repr(c) if quote else str(c) for c in values) + "]"


# ---------------------------------------------------------------------- wording
def _names(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _count(values: list[Any], one: str, many: str) -> str:
    return f"{len(values)} {one if len(values) == 1 else many}"


def _values(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_NAMED])
    more = len(values) - MAX_NAMED
    return f"{shown} and {more} more" if more > 0 else shown


# ---------------------------------------------------------------------- fair scoring
@dataclass(frozen=True)
class ChampionInputs:
    """The candidate's holdout rows as the champion reads them."""

    x: np.ndarray  # float32 [rows, features], in the champion's encoding
    accepted: np.ndarray  # bool [rows]: the rows a client could send to the champion too


def encoding_mismatch(candidate: Card, champion: Card) -> str | None:
    """Why the candidate's holdout rows cannot be given to the champion, or None when they can
    (champion_inputs): that needs the same task, the same features (names, order and kinds)
    and, for classifiers, the same classes, so that the holdout labels mean the same to both.
    """
    if candidate.task != champion.task:
        return f"the champion is a {champion.task} model, the candidate a {candidate.task} model"
    if candidate.feature_names != champion.feature_names:
        return (
            f"feature names or order: {_names(champion.feature_names)} vs "
            f"{_names(candidate.feature_names)}"
        )
    for new, old in zip(candidate.features, champion.features, strict=True):
        if new.dtype != old.dtype:
            return f"{new.name!r} is a {new.dtype} here, a {old.dtype} in the champion"
    if candidate.task == "classification" and _class_changes(
        candidate.classes or [], champion.classes or []
    ):
        return f"classes {champion.classes} vs {candidate.classes}"
    return None


def champion_inputs(candidate: Card, champion: Card, x: np.ndarray) -> ChampionInputs:
    """The candidate's input rows `x` in the champion's encoding, for cards that
    encoding_mismatch finds alike. Each category code becomes the champion's code for the same
    value; a row the champion could not take from a client (a category it never learnt, a null
    it refuses) is not `accepted`.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    accepted = np.ones(len(x), dtype=bool)
    for j, (new, old) in enumerate(zip(candidate.features, champion.features, strict=True)):
        column = out[:, j]
        if new.dtype == "number":
            if not old.nullable:
                accepted &= ~np.isnan(column)
            continue
        codes = {category_key(c): float(i) for i, c in enumerate(old.categories or [])}
        translate = [codes.get(category_key(c), math.nan) for c in new.categories or []]
        finite = np.isfinite(column)
        index = np.where(finite, column, -1).astype(np.int64)
        valid = finite & (column == index) & (index >= 0) & (index < len(translate))
        mapped = np.full(len(column), math.nan, dtype=np.float32)
        mapped[valid] = np.asarray(translate, dtype=np.float32)[index[valid]]
        accepted &= ~np.isnan(mapped)
        out[:, j] = np.where(np.isnan(mapped), 0.0, mapped)
    return ChampionInputs(out, accepted)
