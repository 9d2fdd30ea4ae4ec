"""What `dropflow models show` prints: a version's card as a page a person reads.

The JSON (`models show --json`) is dropflow.promotion.rollback.show_version's answer as it is;
this is the same answer, shortened where a reader needs only the gist: digests to their first
12 hex digits, long feature lists to their first names.
"""

from __future__ import annotations

from typing import Any

from dropflow.vocabulary.card import MISSING_CATEGORY

# Enough to recognise a digest in `sha256sum` output; --json has them whole.
DIGEST_CHARS = 12
# Features named on the card before "... and N more" (--json lists them all).
FEATURES_SHOWN = 12


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _metrics(values: dict[str, Any]) -> str:
    return "  ".join(f"{name}={value:.4g}" for name, value in values.items())


def _feature(feature: dict[str, Any]) -> str:
    if feature.get("dtype") != "category":
        kind = "number, may be null" if feature.get("nullable") else "number"
        return f"{feature['name']} ({kind})"
    shown = ", ".join("null" if c == MISSING_CATEGORY else str(c) for c in feature["categories"])
    return f"{feature['name']} (one of {shown})"


def render_card(shown: dict[str, Any]) -> str:
    """`shown` (show_version's answer) as `name  value` lines under a title line: version,
    decision, task, metrics against the baseline, features, sizes, short digests, training."""
    record, card = shown["record"], shown.get("card")
    title = f"{shown['model']} {shown['version']}"
    lines = [title + (" (champion)" if shown.get("champion") else "")]
    fields: list[tuple[str, str]] = []
    decision = record.get("decision") or "pending"
    fields.append(
        ("decision", f"{decision}: {record['reason']}" if record.get("reason") else decision)
    )
    if record.get("route"):
        why = f" ({record['route_reason']})" if record.get("route_reason") else ""
        fields.append(("served by", f"{record['route']}{why}"))
    if card is None:
        fields.append(("card", "unreadable or gone (its files may have aged out)"))
    else:
        metrics = card["metrics"]
        task = f"{card['task']}, target {card['target']!r}"
        if card.get("classes"):
            task += f", classes {', '.join(str(c) for c in card['classes'])}"
        fields.append(("task", task))
        fields.append(
            (
                "holdout",
                f"{_metrics(metrics['holdout'])}  ({metrics['holdout_rows']} rows; "
                f"primary {metrics['primary']})",
            )
        )
        baseline = metrics.get("baseline")
        fields.append(
            ("baseline", f"{_metrics(baseline)}  (naive: no features)" if baseline else "none")
        )
        features = card["features"]
        named = "; ".join(_feature(f) for f in features[:FEATURES_SHOWN])
        more = len(features) - FEATURES_SHOWN
        named += f"; ... and {more} more (--json lists them)" if more > 0 else ""
        fields.append(("features", f"{len(features)}: {named}"))
        fields.append(
            (
                "sizes",
                f"model.onnx {_size(card.get('model_bytes') or 0)}, "
                f"{metrics['train_rows']} training rows, {metrics['holdout_rows']} holdout rows",
            )
        )
        training = card.get("training") or {}
        if training:
            epochs = training.get("epochs")
            device = training.get("device") or "?"
            seconds = (card.get("timings") or {}).get("total")
            took = f", {seconds:.1f} s in all" if isinstance(seconds, int | float) else ""
            fields.append(("training", f"{epochs} epochs on {device}{took}"))
        fields.append(("created", f"{card['created_at']} by job {card['job_id']}"))
    digests = record.get("digests") or {}
    if digests:
        short = ", ".join(f"{name} {digest[:DIGEST_CHARS]}" for name, digest in digests.items())
        fields.append(("sha256", short))
    lines += [f"  {name:<10}  {value}" for name, value in fields]
    return "\n".join(lines)
