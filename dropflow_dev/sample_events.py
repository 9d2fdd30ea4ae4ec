"""Events for the user's own models, in the exact shape each function of template.yaml receives.

    dropflow events predict --model iris > my.json && dropflow invoke PredictFunction -e my.json

The files in events/ name a model and an instance that exist nowhere but in the tests; these
are filled in from dropflow's state instead (the local home's registry and bucket, or whatever
DROPFLOW_STORE_URL and DROPFLOW_REGISTRY_URL point at): the champion's holdout rows for a
prediction (an image model's as PNG files in base64, a text model's as the texts its tokenizer
decodes them to; `predict-image` sends one image as a raw image/png body), the newest file of a
dataset for a drop, the version a job published for a card, the instance a job runs on for the
EC2 events. Where there is nothing to fill in, the caller gets an EventError saying what is
missing and what to pass instead.

API events are built by the same translation the local gateway uses
(dropflow.serving.proxy_event), EventBridge events by the local runtime's own
(dropflow_dev.local.events): an event made here is the one `dropflow local up` would send.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from dropflow.errors import DropflowError, NotFoundError
from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.records.catalog import Catalog
from dropflow.records.jobs import Job, JobStore
from dropflow.serving.proxy_event import DEFAULT_ROUTES, ProxyEvents
from dropflow.vocabulary.card import (
    INPUT_NAME,
    MISSING_CATEGORY,
    Card,
    Feature,
    artifact_key,
    card_key,
    read_card,
)
from dropflow.vocabulary.datasets import data_files, dataset_prefix
from dropflow.vocabulary.names import check_model_name, check_version, model_of_job
from dropflow_dev.event_shapes import KINDS, Kind
from dropflow_dev.lambda_context import LOCAL_ACCOUNT
from dropflow_dev.local import events as local_events
from dropflow_dev.local.gateway import API_ID, STAGE
from dropflow_dev.local.runtime import LOCAL_BUCKET

# The states TrackTrainingFunction's InstanceStateChange rule delivers (template.yaml).
INSTANCE_STATES = ("running", "shutting-down", "terminated", "stopped")
DEFAULT_ROWS = 2
# What a text model's event sends when the version's holdout texts cannot be read back.
PLACEHOLDER_TEXT = "an example text"
# float32 holds about 7 significant digits: more would print noise (5.099999904632568).
_DIGITS = 7


class EventError(DropflowError):
    """The event cannot be built as asked: the message says what is missing and what to pass."""


@dataclass(frozen=True)
class State:
    """What dropflow knows, to fill events in with: `where` names it in messages."""

    store: ObjectStore
    catalog: Catalog
    jobs: JobStore
    where: str


@dataclass(frozen=True)
class Request:
    """What `dropflow events` was asked for; None means: find it in the state."""

    kind: str
    model: str | None = None
    version: str | None = None
    job: str | None = None
    instance: str | None = None
    state: str = "terminated"
    rows: int = DEFAULT_ROWS
    bucket: str = LOCAL_BUCKET


def open_state(home: Path) -> State | None:
    """dropflow's state to fill events in with: the adapters DROPFLOW_STORE_URL and
    DROPFLOW_REGISTRY_URL name (a deployed stack's, say), else the local home's when it has a
    registry; None when there is neither. Nothing is created."""
    from dropflow import wiring
    from dropflow_dev.local.runtime import configure

    if "DROPFLOW_STORE_URL" in os.environ:
        where = os.environ["DROPFLOW_STORE_URL"]
    elif (home / "registry.db").is_file():
        where = str(configure(home).home)
    else:
        return None
    return State(wiring.store(), wiring.catalog(), wiring.jobs(), where)


def bucket_name() -> str:
    """The bucket events name: DROPFLOW_STORE_URL's on S3, the local runtime's otherwise."""
    url = urlsplit(os.environ.get("DROPFLOW_STORE_URL", ""))
    return url.netloc if url.scheme == "s3" and url.netloc else LOCAL_BUCKET


def build(request: Request, state: State | None) -> tuple[dict[str, Any], list[str]]:
    """The event `request` asks for, and notes for people on what was assumed.

    `state` None means there is no dropflow state to read: only what needs nothing from it
    (the schedules, health, models, an EC2 event for --instance, a drop) can be built then.
    Raises EventError naming what is missing.
    """
    kind = KINDS.get(request.kind)
    if kind is None:
        raise EventError(f"unknown kind {request.kind!r}; kinds: {', '.join(KINDS)}")
    builder = _Builder(request, state, kind)
    event = getattr(builder, "_" + kind.name.replace("-", "_"))()
    return event, builder.notes


class _Builder:
    def __init__(self, request: Request, state: State | None, kind: Kind) -> None:
        self.request, self.state, self.kind = request, state, kind
        self.notes: list[str] = []
        # reference.npz by version: a text model's event reads its texts and columns from it
        self._references: dict[str, np.ndarray | None] = {}
        if request.version is not None:
            check_version(request.version)

    # ------------------------------------------------------------------ what to fill in
    @property
    def model(self) -> str:
        if self.request.model is None and self.request.job is not None:
            return model_of_job(self.request.job)
        if self.request.model is None:
            raise EventError(f"{self.kind.name} names a model: pass --model M")
        return check_model_name(self.request.model)

    def _state(self, what: str) -> State:
        if self.state is None:
            raise EventError(
                f"nothing to fill in {what} with: there is no dropflow state here (no local "
                "home with a registry.db; `dropflow local up --home DIR` makes one, or set "
                "DROPFLOW_STORE_URL and DROPFLOW_REGISTRY_URL for a stack)"
            )
        return self.state

    def _version(self) -> str:
        """--version, else the model's champion."""
        if self.request.version is not None:
            return self.request.version
        state = self._state(f"the rows of {self.model!r}")
        champion = state.catalog.champion(self.model)
        if champion is None:
            jobs = state.jobs.for_model(self.model)
            why = f"its last job is {jobs[-1].state.value}" if jobs else "it has no job"
            raise EventError(
                f"{self.model!r} has no champion in {state.where} ({why}): pass --version V "
                "for a published version (`dropflow models list`), or wait for one"
            )
        return champion.version

    def _card(self, version: str) -> Card:
        state = self._state(f"the rows of {self.model!r}")
        try:
            return read_card(state.store, self.model, version)
        except ObjectNotFound:
            raise EventError(
                f"{self.model!r} has no version {version} in {state.where} "
                f"({card_key(self.model, version)} is missing): see `dropflow models list "
                f"{self.model}`"
            ) from None

    def _job(self, what: str) -> Job | None:
        """--job, else the model's newest job (None when it has none), to fill in `what`."""
        state = self._state(what)
        if self.request.job is not None:
            try:
                return state.jobs.get(self.request.job)
            except NotFoundError as exc:
                raise EventError(f"{exc} in {state.where}") from None
        jobs = state.jobs.for_model(self.model)
        return max(jobs, key=lambda j: j.created_at) if jobs else None

    # ------------------------------------------------------------------ API Gateway
    def _api(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """The proxy event of a request; `body` goes as JSON, or as it is when it is bytes."""
        events = ProxyEvents(DEFAULT_ROUTES, stage=STAGE, api_id=API_ID, account_id=LOCAL_ACCOUNT)
        headers = [("Accept", "application/json"), ("User-Agent", "dropflow-events")]
        data = b""
        if body is not None:
            headers.append(("Content-Type", content_type))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return events.event_for(method, path, headers, data, "127.0.0.1", domain="localhost")

    def _health(self) -> dict[str, Any]:
        return self._api("GET", "/health")

    def _models(self) -> dict[str, Any]:
        return self._api("GET", "/models")

    def _model(self) -> dict[str, Any]:
        return self._api("GET", f"/models/{self.model}")

    def _metadata(self) -> dict[str, Any]:
        return self._api("GET", self._oip_path())

    def _oip_path(self) -> str:
        path = f"/v2/models/{self.model}"
        return path if self.request.version is None else f"{path}/versions/{self.request.version}"

    def _predict(self) -> dict[str, Any]:
        card = self._card(self._version())
        if card.input is not None:
            field = card.input.field
            values = self._media_values(card)
            columns = self._columns(card, len(values))
            instances: list[Any] = [
                {field: value, **row} for value, row in zip(values, columns, strict=True)
            ]
        else:
            rows = self._rows(card)
            instances = [
                {f.name: _api_value(f, value) for f, value in zip(card.features, row, strict=True)}
                for row in rows
            ]
        body: dict[str, Any] = {"instances": instances}
        if self.request.version is not None:
            body["version"] = self.request.version
        return self._api("POST", f"/models/{self.model}/predict", body)

    def _predict_image(self) -> dict[str, Any]:
        card = self._card(self._version())
        if card.input is None or card.input.kind != "image":
            takes = "table rows" if card.input is None else card.input.kind
            raise EventError(
                f"{self.model} {card.version} takes {takes}, not images: a raw image body is "
                f"only for image models; use `dropflow events predict --model {self.model}`"
            )
        (value,) = self._media_values(card, wanted=1)  # a raw body carries one image
        path = f"/models/{self.model}/predict"
        if self.request.version is not None:
            path += f"?version={self.request.version}"
        event = self._api("POST", path, base64.b64decode(value), content_type="image/png")
        # API Gateway base64-encodes a body of a binary media type (template.yaml's
        # BinaryMediaTypes), whatever its bytes.
        event["body"] = value
        event["isBase64Encoded"] = True
        return event

    def _infer(self) -> dict[str, Any]:
        card = self._card(self._version())
        if card.input is not None:
            values = self._media_values(card)
            # The protocol's one input of an image or text model: its field, BYTES; a text
            # model's tabular columns follow, one input each, raw values as the API takes them.
            inputs = [
                {
                    "name": card.input.field,
                    "shape": [len(values)],
                    "datatype": "BYTES",
                    "data": values,
                }
            ]
            columns = self._columns(card, len(values))
            for feature in card.tabular_features:
                data = [row[feature.name] for row in columns]
                inputs.append(
                    {
                        "name": feature.name,
                        "shape": [len(data)],
                        "datatype": _oip_datatype(feature, data),
                        "data": data,
                    }
                )
            return self._api("POST", f"{self._oip_path()}/infer", {"inputs": inputs})
        else:
            rows = self._rows(card)
            tensor = {
                "name": INPUT_NAME,
                "shape": [len(rows), len(card.features)],
                "datatype": "FP32",
                # The graph's own columns: numbers, category codes, null for missing.
                "data": [[_number(v) for v in row] for row in rows],
            }
        return self._api("POST", f"{self._oip_path()}/infer", {"inputs": [tensor]})

    def _reference_input(self, card: Card) -> np.ndarray | None:
        """The graph input of `card`'s holdout rows (reference.npz), None when unreadable;
        read once per version."""
        if card.version not in self._references:
            self._references[card.version] = self._read_reference(card)
        return self._references[card.version]

    def _read_reference(self, card: Card) -> np.ndarray | None:
        name = card.files.get("reference", "reference.npz")
        try:
            raw = self._state("rows").store.get(artifact_key(self.model, card.version, name))
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                return np.asarray(npz[INPUT_NAME])
        except (ObjectNotFound, KeyError, ValueError, OSError):
            return None

    def _rows(self, card: Card) -> np.ndarray:
        """Holdout rows of a table model's `card` as the graph reads them, complete ones first."""
        version = card.version
        wanted = max(1, self.request.rows)
        x = self._reference_input(card)
        x = x.astype(np.float32) if x is not None and np.issubdtype(x.dtype, np.number) else None
        name = card.files.get("reference", "reference.npz")
        if x is None or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(card.features):
            self.notes.append(
                f"{self.model} {version} has no readable holdout rows ({name}): the rows are "
                "made up from its input schema (0 for numbers, the first category)"
            )
            return np.array([_made_up_row(card.features)] * wanted, dtype=np.float32)
        # A NaN where the feature is not nullable gets a warning or a 422: take others first.
        nullable = np.array([f.nullable or f.dtype == "category" for f in card.features])
        complete = ~np.any(np.isnan(x) & ~nullable, axis=1)
        ordered = np.concatenate([x[complete], x[~complete]])
        self.notes.append(f"{min(wanted, len(ordered))} holdout rows of {self.model} {version}")
        return ordered[:wanted]

    def _columns(self, card: Card, wanted: int) -> list[dict[str, Any]]:
        """A text model's tabular columns for its first `wanted` holdout rows, as a client
        sends them ({} per row when it has none); made up from the card where unreadable."""
        features = card.tabular_features
        if not features:
            return [{} for _ in range(wanted)]
        assert card.input is not None
        x = self._reference_input(card)
        if x is not None and x.shape[1:] == card.input_row_shape and len(x) >= wanted:
            rows = x[:wanted, card.input.row_shape[0] :].astype(np.float32)
        else:
            rows = np.array([_made_up_row(features)] * wanted, dtype=np.float32)
            self.notes.append(
                f"{self.model} {card.version}'s columns are made up from its input schema "
                "(0 for numbers, the first category)"
            )
        return [
            {f.name: _api_value(f, value) for f, value in zip(features, row, strict=True)}
            for row in rows
        ]

    def _media_values(self, card: Card, wanted: int | None = None) -> list[str]:
        """What a client sends an image or text model for its holdout rows: PNG files of the
        holdout pixels in base64, or the holdout texts as the published tokenizer decodes
        their token ids; made up (a grey image, a placeholder text) where they are unreadable."""
        assert card.input is not None
        spec, version = card.input, card.version
        wanted = wanted or max(1, self.request.rows)
        x = self._reference_input(card)
        if x is not None and card.tabular_features and x.shape[1:] == card.input_row_shape:
            # A text model with columns: token ids (whole numbers in float32) come first.
            x = x[:, : spec.row_shape[0]].astype(np.int64)
        if x is not None and (
            x.shape[1:] != spec.row_shape or not np.issubdtype(x.dtype, np.integer)
        ):
            x = None
        values: list[str] = []
        if x is not None and spec.kind == "image":
            values = [_png_base64(pixels) for pixels in x[:wanted].astype(np.uint8)]
        elif x is not None:
            values = self._texts(card, x[:wanted])
        if values:
            self.notes.append(f"{len(values)} holdout rows of {self.model} {version}")
            return values
        if spec.kind == "image":
            grey = np.full(spec.row_shape, 128, dtype=np.uint8)
            what = f"a grey {spec.width}x{spec.height} PNG"
            values = [_png_base64(grey)] * wanted
        else:
            what = f"the text {PLACEHOLDER_TEXT!r}"
            values = [PLACEHOLDER_TEXT] * wanted
        self.notes.append(
            f"{self.model} {version} has no readable holdout rows: the event sends {what}"
        )
        return values

    def _texts(self, card: Card, ids: np.ndarray) -> list[str]:
        """The texts `ids` encode, by the version's tokenizer.json; [] when it is unreadable or
        a text decodes to nothing (every token special or padding)."""
        from tokenizers import Tokenizer

        assert card.input is not None and card.input.tokenizer is not None
        key = artifact_key(self.model, card.version, card.input.tokenizer)
        try:
            tokenizer = Tokenizer.from_str(self._state("texts").store.get(key).decode())
        except Exception:  # missing, or unparsable: tokenizers raises a bare Exception then
            return []
        # What the tokenizer adds to every text (its template's [CLS] and [SEP], padding) is
        # left out: a learnt vocabulary need not mark those tokens special for decode to skip.
        added = set(tokenizer.encode("").ids) | {card.input.pad_id}
        texts = tokenizer.decode_batch(
            [[int(i) for i in row if int(i) not in added] for row in ids], skip_special_tokens=True
        )
        return texts if all(text.strip() for text in texts) else []

    # ------------------------------------------------------------------ EventBridge
    def _dataset_created(self) -> dict[str, Any]:
        prefix = dataset_prefix(self.model)
        files = data_files(self.state.store.list(prefix)) if self.state is not None else []
        if files:
            newest = max(files, key=lambda o: (o.modified, o.key))
            key, size, etag = newest.key, newest.size, newest.etag
        else:
            key, size, etag = f"{prefix}data.csv", 0, ""
            where = self.state.where if self.state is not None else "dropflow's state"
            self.notes.append(
                f"no .csv or .parquet file under {prefix} in {where}: the event names {key}, "
                "and the function answers no-data until a file is there"
            )
        return local_events.s3_object_created(self.request.bucket, key, size, etag)

    def _card_created(self) -> dict[str, Any]:
        version = self.request.version or self._published_version()
        key = card_key(self.model, version)
        found = self.state.store.head(key) if self.state is not None else None
        if found is None:
            self.notes.append(f"{key} is not in the store: promotion will refuse it")
        return local_events.s3_object_created(
            self.request.bucket, key, found.size if found else 0, found.etag if found else ""
        )

    def _published_version(self) -> str:
        """The version --job published, else the one the model's newest job published, else
        its newest version in the catalog."""
        state = self._state(f"the version of {self.model!r}")
        job = self._job("the version")
        if job is not None and job.version is not None:
            return job.version
        if self.request.job is not None and job is not None:
            raise EventError(
                f"job {job.job_id} is {job.state.value} and has published no version: "
                "pass --version V, or wait for it to publish (`dropflow status`)"
            )
        published = [v.version for v in state.catalog.versions(self.model)]
        if not published:
            raise EventError(
                f"{self.model!r} has published no version in {state.where}: pass --version V, "
                "or wait for its job to publish (`dropflow status`)"
            )
        return max(published)

    def _schedule_retrain(self) -> dict[str, Any]:
        return local_events.scheduled("dropflow-LaunchTrainingFunctionRetrainSchedule")

    def _schedule_watchdog(self) -> dict[str, Any]:
        return local_events.scheduled("dropflow-TrackTrainingFunctionWatchdog")

    def _instance_id(self) -> str:
        if self.request.instance is not None:
            return self.request.instance
        if self.request.model is None and self.request.job is None:
            raise EventError(
                f"{self.kind.name} names an instance: pass --job J, --model M or --instance I"
            )
        job = self._job("the instance")
        attempt = job.current_attempt if job is not None else None
        if attempt is None or not attempt.instance_id:
            whose = f"job {job.job_id} ({job.state.value})" if job else f"{self.model!r}"
            raise EventError(
                f"{whose} has no instance in {self._state('the instance').where}: "
                "pass --instance I, or --job J for a job that started one (`dropflow status`)"
            )
        self.notes.append(
            f"instance {attempt.instance_id} of job {job.job_id} (attempt {attempt.number})"
        )
        return attempt.instance_id

    def _state_change(self) -> dict[str, Any]:
        if self.request.state not in INSTANCE_STATES:
            raise EventError(
                f"state {self.request.state!r} is not one TrackTrainingFunction is sent; "
                f"use one of {', '.join(INSTANCE_STATES)}"
            )
        return local_events.ec2_state_change(self._instance_id(), self.request.state)

    def _spot_interruption(self) -> dict[str, Any]:
        detail = {"instance-id": self._instance_id(), "instance-action": "terminate"}
        return _ec2_notice("EC2 Spot Instance Interruption Warning", detail)

    def _rebalance_recommendation(self) -> dict[str, Any]:
        detail = {"instance-id": self._instance_id()}
        return _ec2_notice("EC2 Instance Rebalance Recommendation", detail)


def _ec2_notice(detail_type: str, detail: dict[str, str]) -> dict[str, Any]:
    # The notices share the state change's envelope (source aws.ec2, the instance's ARN).
    event = local_events.ec2_state_change(detail["instance-id"], "running")
    return {**event, "detail-type": detail_type, "detail": detail}


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(f"{float(value):.{_DIGITS}g}")


def _api_value(feature: Feature, value: float) -> Any:
    """A graph column's value as a client sends it: the category itself, null for missing."""
    if math.isnan(value) or feature.dtype != "category":
        return _number(value)
    categories = feature.categories or []
    code = int(value)
    if not 0 <= code < len(categories) or categories[code] == MISSING_CATEGORY:
        return None
    return categories[code]


def _oip_datatype(feature: Feature, data: list[Any]) -> str:
    """The protocol's datatype for one tabular feature's raw values."""
    if feature.dtype == "number":
        return "FP32"
    present = [value for value in data if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "BOOL"
    if present and all(isinstance(value, (int, float)) for value in present):
        return "FP64"
    return "BYTES"


def _png_base64(pixels: np.ndarray) -> str:
    """uint8 [H, W, 3] pixels as a PNG file in base64, as a client sends an image."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG")  # [H, W, 3]: RGB
    return base64.b64encode(out.getvalue()).decode("ascii")


def _made_up_row(features: Sequence[Feature]) -> list[float]:
    return [0.0 for _ in features]  # a category's code 0 is its first category
