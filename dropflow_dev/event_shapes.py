"""Which source an event comes from, and whether a function of template.yaml is ever sent it.

`dropflow invoke` asks this before it runs a handler, so an event of the wrong shape is named
(what the function takes, what the event looks like, which function takes it instead) rather
than answered with the handler's traceback. What a function takes is read from its `Events`
in the template, never from a list kept here:

- `Api`: an API Gateway REST API's Lambda proxy event (payload 1.0);
- `HttpApi`: an HTTP API's (payload 2.0);
- `Schedule`: EventBridge's "Scheduled Event" from aws.events;
- `EventBridgeRule`: an EventBridge event its `Pattern` matches. The pattern is applied with
  EventBridge's matching rules for what it uses (values, `prefix`, `suffix`, `wildcard`,
  `anything-but`, `exists`); a value only CloudFormation knows (`!Ref DataBucket`) matches any.

A function with no trigger of those types (a test's small template) takes anything.

KINDS lists the kinds of event `dropflow events` makes (dropflow_dev.sample_events builds
them) and the function each is for: a refusal names the kind to use. It never decides what a
function takes; tests check that each kind is taken by its function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropflow_dev.invoke import function_ids

# What EventBridge puts in every event it delivers; the handlers' parser requires all of them.
ENVELOPE_KEYS = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
# EventBridge's only envelope version. The CloudWatch Events samples (`sam local
# generate-event cloudwatch scheduled-event`) leave the key out; a handler reads nothing from it.
ENVELOPE_VERSION = "0"

REST_PROXY = "rest-proxy"
HTTP_API = "http-api"
EVENTBRIDGE = "eventbridge"
S3_NOTIFICATION = "s3-notification"
RECORDS = "records"
LOAD_BALANCER = "load-balancer"
UNKNOWN = "unknown"

KNOWN_TRIGGERS = ("Api", "HttpApi", "Schedule", "EventBridgeRule")


@dataclass(frozen=True)
class Shape:
    """What an event looks like: `kind` (one of the constants above) and a phrase for people."""

    kind: str
    description: str
    detail_type: str | None = None  # EventBridge events only
    source: str | None = None


def shape_of(event: Any) -> Shape:
    """The source `event` comes from, judged by the keys each AWS source always sends."""
    if not isinstance(event, dict):
        return Shape(UNKNOWN, f"a JSON {type(event).__name__}, not an object")
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        first = records[0]
        origin = first.get("eventSource") or first.get("EventSource") or "an unknown source"
        if origin == "aws:s3":
            key = ((first.get("s3") or {}).get("object") or {}).get("key")
            return Shape(
                S3_NOTIFICATION,
                f"an S3 bucket notification (Records[], {first.get('eventName', 'no eventName')}"
                + (f", key {key}" if key else "")
                + ")",
            )
        return Shape(RECORDS, f"a Records[] batch from {origin}")
    context = event.get("requestContext")
    context = context if isinstance(context, dict) else {}
    if event.get("version") == "2.0" and ("routeKey" in event or "http" in context):
        method = (context.get("http") or {}).get("method", "?")
        return Shape(
            HTTP_API,
            f"an API Gateway HTTP API (v2) event, payload format 2.0 "
            f"({method} {event.get('rawPath', '?')})",
        )
    if "httpMethod" in event:
        if "elb" in context:
            return Shape(LOAD_BALANCER, "an Application Load Balancer event")
        return Shape(
            REST_PROXY,
            f"an API Gateway REST (v1) proxy event ({event['httpMethod']} {event.get('path')})",
        )
    if "detail-type" in event and "source" in event:
        detail_type, source = str(event["detail-type"]), str(event["source"])
        about = f"{source} {detail_type!r}"
        key = _object_key(event)
        if key is not None:
            about += f" for {key}"
        return Shape(EVENTBRIDGE, f"an EventBridge event ({about})", detail_type, source)
    keys = ", ".join(sorted(event)[:8]) or "none"
    return Shape(UNKNOWN, f"no event shape dropflow knows (its keys: {keys})")


def _object_key(event: Mapping[str, Any]) -> str | None:
    detail = event.get("detail")
    obj = detail.get("object") if isinstance(detail, dict) else None
    key = obj.get("key") if isinstance(obj, dict) else None
    return key if isinstance(key, str) else None


# --------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class Kind:
    """One kind of event: the function that receives it and the events/ file of its shape."""

    name: str
    function: str
    what: str
    sample: str | None = None  # the events/ file of the same shape, if there is one
    needs: str = ""  # "model" or "instance": what must be named or found


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("health", "PredictFunction", "GET /health", "apigw-health.json"),
        Kind("models", "PredictFunction", "GET /models", "apigw-models.json"),
        Kind("model", "PredictFunction", "GET /models/{name}: its card", needs="model"),
        Kind(
            "predict",
            "PredictFunction",
            "POST /models/{name}/predict, holdout rows (images, texts)",
            "apigw-predict.json",
            "model",
        ),
        Kind(
            "predict-image",
            "PredictFunction",
            "POST /models/{name}/predict, an image model's holdout image as a raw PNG body",
            needs="model",
        ),
        Kind(
            "metadata",
            "PredictFunction",
            "GET /v2/models/{name}: OIP metadata",
            needs="model",
        ),
        Kind(
            "infer",
            "PredictFunction",
            "POST /v2/models/{name}/infer, holdout rows",
            needs="model",
        ),
        Kind(
            "dataset-created",
            "LaunchTrainingFunction",
            "S3 Object Created: newest file of datasets/M/",
            "s3-dataset-created.json",
            "model",
        ),
        Kind(
            "schedule-retrain",
            "LaunchTrainingFunction",
            "Scheduled Event (RetrainSchedule)",
            "schedule-retrain.json",
        ),
        Kind(
            "card-created",
            "PromoteModelFunction",
            "S3 Object Created: models/M/V/card.json",
            "s3-model-card-created.json",
            "model",
        ),
        Kind(
            "schedule-watchdog",
            "TrackTrainingFunction",
            "Scheduled Event (Watchdog)",
            "schedule-watchdog.json",
        ),
        Kind(
            "spot-interruption",
            "TrackTrainingFunction",
            "EC2 Spot Instance Interruption Warning",
            "ec2-spot-interruption.json",
            "instance",
        ),
        Kind(
            "rebalance-recommendation",
            "TrackTrainingFunction",
            "EC2 Instance Rebalance Recommendation",
            "ec2-rebalance-recommendation.json",
            "instance",
        ),
        Kind(
            "state-change",
            "TrackTrainingFunction",
            "EC2 Instance State-change Notification",
            "ec2-state-change.json",
            "instance",
        ),
    )
}


def kinds_for(function: str) -> list[Kind]:
    """The kinds of event `function` receives, in KINDS order."""
    return [kind for kind in KINDS.values() if kind.function == function]


def suggestion(function: str) -> str | None:
    """The `dropflow events` command line that makes an event for `function`, or None."""
    kinds = kinds_for(function)
    if not kinds:
        return None
    # The kind of a sample event that names a model says most about what to pass.
    first = next((k for k in kinds if k.sample and k.needs == "model"), kinds[0])
    line = f"`dropflow events {first.name}" + (" --model M`" if first.needs == "model" else "`")
    rest = [k.name for k in kinds if k is not first]
    return line + (f" (or {', '.join(rest)})" if rest else "")


# --------------------------------------------------------------------------- triggers
@dataclass(frozen=True)
class Trigger:
    """One entry of a function's `Events` in the template."""

    name: str
    type: str
    properties: Mapping[str, Any] = field(default_factory=dict)

    def accepts(self, event: Any, shape: Shape) -> bool:
        """Whether this trigger would deliver `event` (of `shape`) to its function."""
        if self.type == "Api":
            return shape.kind == REST_PROXY
        if self.type == "HttpApi":
            return shape.kind == HTTP_API
        if self.type == "Schedule":
            return (shape.source, shape.detail_type) == ("aws.events", "Scheduled Event")
        if self.type == "EventBridgeRule":
            pattern = self.properties.get("Pattern")
            return shape.kind == EVENTBRIDGE and (
                not isinstance(pattern, dict) or matches(pattern, event)
            )
        return True

    def describe(self) -> str:
        """What this trigger sends, for people."""
        if self.type == "Api":
            return "an API Gateway REST (v1) proxy event"
        if self.type == "HttpApi":
            return "an API Gateway HTTP API (v2) event"
        if self.type == "Schedule":
            return f"an EventBridge Scheduled Event (its {self.name} schedule)"
        pattern = self.properties.get("Pattern")
        pattern = pattern if isinstance(pattern, dict) else {}
        sources = _literals(pattern.get("source"))
        kinds = _literals(pattern.get("detail-type"))
        text = "an EventBridge event"
        if kinds:
            text += " " + " or ".join(repr(k) for k in kinds)
        if sources:
            text += " from " + " or ".join(sources)
        conditions = list(_conditions(pattern.get("detail"), "detail"))
        if conditions:
            text += " with " + " and ".join(conditions)
        return text


def triggers_of(template: Mapping[str, Any], logical_id: str) -> list[Trigger]:
    """The function's `Events` in the template, in template order."""
    resource = (template.get("Resources") or {}).get(logical_id) or {}
    events = (resource.get("Properties") or {}).get("Events") or {}
    return [
        Trigger(name, str(spec.get("Type")), spec.get("Properties") or {})
        for name, spec in events.items()
        if isinstance(spec, dict)
    ]


def _literals(values: Any) -> list[str]:
    if not isinstance(values, list):
        return []
    return [str(v) for v in values if isinstance(v, str | int | float)]


def _conditions(pattern: Any, path: str) -> Any:
    """Readable conditions of a pattern's detail, e.g. "detail.object.key starting datasets/"."""
    if not isinstance(pattern, dict):
        return
    for key, value in pattern.items():
        where = f"{path}.{key}"
        if isinstance(value, dict):
            yield from _conditions(value, where)
            continue
        shown = []
        for item in value if isinstance(value, list) else []:
            if isinstance(item, str | int | float):
                shown.append(str(item))
            elif isinstance(item, dict) and len(item) == 1:
                [(operator, operand)] = item.items()
                if operator in ("prefix", "suffix", "wildcard") and isinstance(operand, str):
                    word = {"prefix": "starting", "suffix": "ending", "wildcard": "like"}
                    shown.append(f"{word[operator]} {operand}")
        if len(shown) == 1:
            yield f"{where} {shown[0]}"
        elif shown:
            yield f"{where} one of {', '.join(shown)}"


# --------------------------------------------------------------------------- matching
_MISSING = object()


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether EventBridge would match `event` against `pattern` (see the module docstring)."""
    if not isinstance(event, dict):
        return False
    for key, expected in pattern.items():
        if _is_intrinsic(expected):
            continue
        value = event.get(key, _MISSING)
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not matches(expected, value):
                return False
        elif isinstance(expected, list) and not _matches_any(expected, value):
            return False
    return True


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _INTRINSICS


_INTRINSICS = {"Ref", "Condition"} | {
    f"Fn::{name}"
    for name in ("GetAtt", "Sub", "Join", "If", "Select", "Split", "ImportValue", "FindInMap")
}


def _matches_any(alternatives: Sequence[Any], value: Any) -> bool:
    # An array in the event matches when any of its elements does, as in EventBridge.
    values = value if isinstance(value, list) else [value]
    return any(_matches(item, v) for item in alternatives for v in values)


def _matches(item: Any, value: Any) -> bool:
    if _is_intrinsic(item):
        return value is not _MISSING
    if not isinstance(item, dict):
        return value is not _MISSING and item == value
    if len(item) != 1:
        return True  # an operator combination not modelled here: let the handler judge
    [(operator, operand)] = item.items()
    if operator == "exists":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING:
        return False
    if operator == "anything-but":
        excluded = operand if isinstance(operand, list) else [operand]
        return value not in excluded
    if not isinstance(value, str) or not isinstance(operand, str):
        return operator not in ("prefix", "suffix", "wildcard")
    if operator == "prefix":
        return value.startswith(operand)
    if operator == "suffix":
        return value.endswith(operand)
    if operator == "wildcard":
        regex = ".*".join(re.escape(part) for part in operand.split("*"))
        return re.fullmatch(regex, value, flags=re.DOTALL) is not None
    return True


# --------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Verdict:
    """Whether a function takes an event, and the words to say so."""

    accepted: bool
    event: Any  # the event to invoke with (its envelope completed where that is safe)
    shape: Shape
    expected: str = ""  # what the function takes, for people ("" when it takes anything)
    others: tuple[str, ...] = ()  # other functions of the template that take the event
    notes: tuple[str, ...] = ()  # what was completed, for stderr
    missing: tuple[str, ...] = ()  # envelope keys an EventBridge event lacks
    triggers: tuple[Trigger, ...] = ()  # the function's, as the template declares them


def check(template: Mapping[str, Any], logical_id: str, event: Any) -> Verdict:
    """Whether `logical_id` of `template` is ever sent `event`, and which other functions are.

    An EventBridge event without `version` is completed with "0" (what EventBridge always
    sends); one without another envelope key is refused, naming the keys.
    """
    shape = shape_of(event)
    triggers = [t for t in triggers_of(template, logical_id) if t.type in KNOWN_TRIGGERS]
    if not triggers:
        return Verdict(True, event, shape)
    expected = " or ".join(dict.fromkeys(t.describe() for t in triggers))
    known = tuple(triggers)
    accepted = any(t.accepts(event, shape) for t in triggers)
    others = tuple(
        other
        for other in function_ids(template)
        if other != logical_id
        and any(t.accepts(event, shape) for t in triggers_of(template, other))
        and any(t.type in KNOWN_TRIGGERS for t in triggers_of(template, other))
    )
    if not accepted:
        return Verdict(False, event, shape, expected, others, triggers=known)
    if shape.kind != EVENTBRIDGE:
        return Verdict(True, event, shape, expected)
    missing = tuple(key for key in ENVELOPE_KEYS if key not in event)
    if missing == ("version",):
        note = (
            f'the event has no "version"; EventBridge always sends "{ENVELOPE_VERSION}", '
            "so it is invoked with that"
        )
        completed = {"version": ENVELOPE_VERSION, **event}
        return Verdict(True, completed, shape, expected, notes=(note,))
    if missing:
        return Verdict(False, event, shape, expected, others, missing=missing, triggers=known)
    return Verdict(True, event, shape, expected)


def refusal(function: str, verdict: Verdict) -> str:
    """Why `function` is not sent the event `verdict` judged, and what to use instead."""
    shape = verdict.shape
    if verdict.missing:
        lacks = ", ".join(verdict.missing)
        seen = f"this {shape.description} lacks {lacks}, which EventBridge always sends"
    else:
        seen = f"this looks like {shape.description}{_why(shape, verdict.triggers)}"
    remedies = []
    if verdict.others:
        remedies.append("use " + " or ".join(verdict.others))
    line = suggestion(function)
    if line is not None:
        remedies.append(line if remedies else f"make one with {line}")
    return f"{function} takes {verdict.expected}; {seen}" + (
        ": " + ", or ".join(remedies) if remedies else ""
    )


def _why(shape: Shape, triggers: Sequence[Trigger]) -> str:
    """What the stack sends instead, for the shapes people most often reach for."""
    types = {t.type for t in triggers}
    if shape.kind == HTTP_API and "Api" in types:
        return (
            " (the stack's API is a REST API: API Gateway sends the function the REST v1 proxy "
            "event, as `sam local generate-event apigateway aws-proxy` makes it)"
        )
    if shape.kind == S3_NOTIFICATION and any(
        "aws.s3" in _literals((t.properties.get("Pattern") or {}).get("source"))
        for t in triggers
        if t.type == "EventBridgeRule"
    ):
        return (
            " (the stack's bucket sends its events through EventBridge, as 'Object Created' "
            "events, never as bucket notifications)"
        )
    return ""
