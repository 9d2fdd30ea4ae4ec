"""The prediction service behind `POST /models/{name}/predict` (no HTTP here).

A `ModelCache` lives once per execution environment: it keeps onnxruntime sessions per
(model, version) within a memory budget (least recently used first out; a single model larger
than the budget is still served, alone), the cards, and each model's champion pointer with its
route for `champion_ttl` seconds, so a warm request touches neither the store nor the registry
until the pointer expires. A version's card.json and model.onnx are loaded only if they hash to
the digests on its record (what its job published, as promotion verified it): a file changed
since is refused with a 503 naming it, an ERROR log and the metric ModelFileMismatch, and the
version is not served until its files are restored or the model is rolled back.
`PredictionService` checks the client's instances against the card (a table's rows here; an
image or a text model's values in dropflow.serving.media_input, whose tokenizer file, like
model.onnx, is loaded once per version and only if it hashes to its record's digest),
runs the graph and maps class ids back to the target's original labels; in the predict function
it forwards the versions routed `container` (dropflow.vocabulary.routing) to the container tier
instead.

What a client may send for a feature (checked by `InputSchema`, against the card's Feature):
- a missing value: null, NaN, or a text that training reads as missing in a data file
  (dropflow.vocabulary.datasets.MISSING_TEXT: "", "NA", "N/A", "NaN", "null", "None", in any
  case, spaces around them trimmed), all alike.
- a number feature: a JSON number, finite and within float32 (booleans and numeric strings
  are refused). A missing value is accepted when the feature is `nullable`, as every number
  feature is since the graph fills in the training median (a card from before imputation
  refuses it); Infinity is refused.
- a category feature: one of its `categories`, as the raw value. Text compares exactly, after
  trimming surrounding spaces (`Red` is not `red`). A JSON number matches the category that
  spells it (3 and 3.0 match `3` or `3.0`), since a CSV column of mostly words can hold some
  numbers. A boolean category takes true/false, or the strings "true"/"false" in any case,
  as training read them. A missing value is the category `<missing>` when training saw
  missing values (the feature is `nullable`). Lists and objects are a 422.
- a value the training rows never had, for a category feature (an unseen category, or a
  missing value where training had none): what the card's `unknown_categories` says (the
  spec's `serving.unknown_categories`, see dropflow.vocabulary.card). `encode` (the default)
  sends it to the graph as NaN, which every graph takes as "none of the known categories",
  and the answer carries a warning for the row naming the feature and the value (`Encoded`);
  `reject` refuses the request with a 422 naming the row, the feature, the value and the
  known categories.
Anything else a feature cannot take is a 422 naming the row, the feature and the value.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from numbers import Real
from typing import Any, NamedTuple, Protocol

import numpy as np
import onnxruntime as ort

from dropflow.errors import DropflowError, NotFoundError, NotReadyError
from dropflow.observability import count_now, logger
from dropflow.ports import ObjectStore, Registry
from dropflow.records.catalog import Catalog
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.serving.forwarding import ContainerClient, ContainerUnavailable
from dropflow.serving.schema import describe_value, rows_problem
from dropflow.vocabulary.card import (
    CARD_FILE,
    ENCODE,
    INPUT_NAME,
    MISSING_CATEGORY,
    PREDICTION,
    PROBABILITIES,
    REJECT,
    TOKENIZER_FILE_KEY,
    Card,
    Feature,
    UnknownCategories,
    artifact_key,
    card_key,
    parse_card,
)
from dropflow.vocabulary.datasets import is_missing_text
from dropflow.vocabulary.digests import mismatch
from dropflow.vocabulary.names import check_model_name, check_version
from dropflow.vocabulary.onnx_session import (
    available_cpus,
    execution_providers,
    open_session,
    provider_in_use,
)
from dropflow.vocabulary.routing import (
    CONTAINER,
    LAMBDA,
    SESSION_MEMORY_FACTOR,
    Route,
    default_cache_budget_mb,
    session_memory_mb,
)

SERVED_BY = LAMBDA
# A model with jobs but no champion is usually minutes away from one (training + promotion).
NOT_READY_RETRY_AFTER = 60
# The most rows one request may carry (the simple API and the Open Inference Protocol alike):
# more is a 413, so that one client cannot hold a function for seconds with a single call.
MAX_ROWS = 10_000
# How many problems one 422 lists: enough to fix a batch in one go, short enough to read.
MAX_REPORTED_PROBLEMS = 5
# The graph's input is float32: a larger magnitude would become infinity inside the model.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# How many of a feature's categories an "unknown category" message lists.
MAX_LISTED_CATEGORIES = 20
# The metric counted each time a version's file is refused for not being its job's.
FILE_MISMATCH_METRIC = "ModelFileMismatch"
# How long a refused version is answered from memory: a model.onnx of hundreds of MB is not
# read again for every request; after this, it is read again (it may have been restored).
REFUSAL_HOLD_SECONDS = 30.0
# The metric counted for each answer that sent values to the graph as unknown (warnings): a
# data owner's sign that clients send values the model never learnt, time to retrain.
UNKNOWN_VALUES_METRIC = "UnknownInputValues"


class NoServableVersion(NotFoundError):
    """A known model with no champion and nothing under way that could make one: its last
    job failed, or promotion rejected what it published (HTTP 404; the message says why)."""


class InvalidInstances(DropflowError, ValueError):
    """The client's instances do not fit the model's input schema (the message says where)."""


class TooManyInstances(DropflowError, ValueError):
    """More than MAX_ROWS instances in one request, or more image pixels than one request may
    carry (HTTP 413)."""


class UnsupportedMedia(DropflowError, ValueError):
    """A raw image body sent to a model that takes no images (HTTP 415)."""


class UntrustedModel(NotReadyError):
    """A version's file is not what its job published (HTTP 503; the message names the file)."""


def check_row_count(count: int) -> None:
    """Raise TooManyInstances when `count` rows are more than one request may carry."""
    if count > MAX_ROWS:
        raise TooManyInstances(
            f"{count} instances in one request; the limit is {MAX_ROWS}: "
            "split them over several requests"
        )


@dataclass(frozen=True)
class _Pointer:
    version: str
    fetched_at: float


@dataclass(frozen=True)
class _Held:
    session: ort.InferenceSession
    memory_mb: float  # the estimate it is counted at against the budget
    provider: str  # the onnxruntime execution provider it runs on


@dataclass
class _Load:
    """A session being built: its builder holds `lock`; `callers` counts it and its waiters."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    callers: int = 0


# How much of a job's failure reason a client reads (the job's record keeps it whole).
MAX_REASON_CHARS = 500


def why_nothing_to_serve(model: str, jobs: Sequence[Job], catalog: Catalog) -> str | None:
    """Why `model`, which has no champion, will have none until its data or spec changes, or
    None while one may still come (a job queued, running or exporting; a version that
    promotion has not decided; no job yet). Worded for a client of the API."""
    if not jobs or any(not job.state.terminal for job in jobs):
        return None
    if any(record.decision == "pending" for record in catalog.versions(model)):
        return None
    last = max(jobs, key=lambda job: (job.created_at, job.job_id))
    fix = f"a new drop under datasets/{model}/ trains it again"
    if last.state == JobState.FAILED:
        return (
            f"model {model!r} has no servable version: its last training job {last.job_id} "
            f"failed: {_reason(last.reason)}; {fix}"
        )
    record = catalog.version(model, last.version) if last.version else None
    if record is None or record.decision != "rejected":
        return None  # published, and promotion has not recorded it yet
    return (
        f"model {model!r} has no servable version: version {record.version}, published by its "
        f"last training job {last.job_id}, was rejected by promotion: {_reason(record.reason)}; "
        f"{fix}"
    )


def _reason(text: str | None) -> str:
    line = " ".join((text or "no reason recorded").split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."


class ModelCache:
    """Sessions, cards and champion pointers, cached for the life of the execution environment.

    Thread-safe (the local gateway serves requests from several threads). Sessions are kept in
    an LRU bounded by `budget_mb` (each counted at dropflow.vocabulary.routing's estimate for the
    size of
    its model.onnx) and by `max_sessions`, so that an environment that sees many champion
    switches or many models does not run out of memory. Room is made before a session is
    built: the peak is what the function's memory must hold.
    """

    def __init__(
        self,
        store: ObjectStore,
        registry: Registry,
        *,
        champion_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        threads: int | None = None,
        max_sessions: int = 16,
        budget_mb: float | None = None,
        memory_factor: float = SESSION_MEMORY_FACTOR,
        gpu: bool = True,
    ) -> None:
        """`budget_mb` defaults to dropflow.vocabulary.routing.default_cache_budget_mb().
        `gpu`: sessions run on CUDA where this onnxruntime has it (the container tier's
        onnxruntime-gpu on a GPU instance; the Lambda's CPU wheel never has it)."""
        self.store = store
        self.catalog = Catalog(registry)
        self.champion_ttl = champion_ttl
        self.clock = clock
        self.threads = threads or available_cpus()
        self.max_sessions = max_sessions
        self.budget_mb = budget_mb if budget_mb is not None else default_cache_budget_mb()
        self.memory_factor = memory_factor
        self.gpu = gpu
        self.providers = execution_providers(gpu=gpu, available=ort.get_available_providers())
        self._lock = threading.Lock()
        self.jobs = JobStore(registry)
        self._champions: dict[str, _Pointer] = {}
        # Why a model has nothing to serve, kept as long as a champion pointer: a client
        # retrying a failed model must not read all of its jobs on every request.
        self._unservable: dict[str, tuple[str, float]] = {}
        self._cards: dict[tuple[str, str], Card] = {}
        self._inputs: dict[tuple[str, str], InstanceEncoder] = {}
        self._servable: set[tuple[str, str]] = set()
        self._routes: dict[tuple[str, str], Route] = {}
        self._sessions: OrderedDict[tuple[str, str], _Held] = OrderedDict()
        self._loads: dict[tuple[str, str], _Load] = {}
        # Per version: its job and the digests on its record, and a refusal with its time.
        self._provenance: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        self._refused: dict[tuple[str, str], tuple[str, float]] = {}

    # ------------------------------------------------------------------ champion pointer
    def champion(self, model: str) -> str:
        """The champion version of `model`, re-read from the registry at most every TTL.

        Raises NotFoundError for a model dropflow never heard of, NotReadyError for a model
        with no champion yet while a job or a promotion is under way, NoServableVersion for a
        model with no champion whose last job failed or published a rejected version.
        """
        now = self.clock()
        with self._lock:
            pointer = self._champions.get(model)
            unservable = self._unservable.get(model)
        if pointer is not None and now - pointer.fetched_at < self.champion_ttl:
            return pointer.version
        if unservable is not None and now - unservable[1] < self.champion_ttl:
            raise NoServableVersion(unservable[0])
        champion = self.catalog.champion(model)
        if champion is None:
            # Not cached while under way: the first champion should be served as soon as it
            # is switched in.
            if not self.catalog.exists(model):
                raise NotFoundError(f"unknown model {model!r}: GET /models lists the models served")
            why = why_nothing_to_serve(model, self.jobs.for_model(model), self.catalog)
            if why is None:
                raise NotReadyError(
                    f"model {model!r} has no champion yet (training or promotion is under way); "
                    f"retry in {NOT_READY_RETRY_AFTER} s",
                    retry_after=NOT_READY_RETRY_AFTER,
                )
            with self._lock:
                self._unservable[model] = (why, now)
            raise NoServableVersion(why)
        route = champion.route or LAMBDA  # pointers from before routing: the function's own
        with self._lock:
            self._unservable.pop(model, None)
            self._champions[model] = _Pointer(champion.version, now)
            self._routes[(model, champion.version)] = route
        return champion.version

    # ------------------------------------------------------------------ versions
    def ensure_servable(self, model: str, version: str) -> None:
        """Check once per environment that `version` was approved by promotion.

        A rejected version may be broken (parity failure), so it is never served.
        """
        if (model, version) in self._servable:
            return
        record = self.catalog.version(model, version)
        if record is None:
            raise NotFoundError(
                f"model {model!r} has no version {version!r}; "
                f"GET /models/{model} shows its champion"
            )
        if record.decision == "pending":
            raise NotReadyError(
                f"version {version!r} of model {model!r} is still being checked by promotion",
                retry_after=NOT_READY_RETRY_AFTER,
            )
        if record.decision != "approved":
            raise NotFoundError(
                f"version {version!r} of model {model!r} was rejected by promotion and is not "
                f"served ({record.reason})"
            )
        with self._lock:
            self._servable.add((model, version))
            self._routes[(model, version)] = record.route or LAMBDA

    def route(self, model: str, version: str) -> Route:
        """Where `version` is served; known without I/O once champion() or ensure_servable()
        resolved it (the pointer and the version record carry it)."""
        key = (model, version)
        with self._lock:
            route = self._routes.get(key)
        if route is not None:
            return route
        record = self.catalog.version(model, version)
        route = (record.route if record else None) or LAMBDA
        with self._lock:
            self._routes[key] = route
        return route

    def card(self, model: str, version: str) -> Card:
        """The version's card (read from the store once, and only if it is its job's).

        Raises UntrustedModel when card.json is not the one its job published.
        """
        key = (model, version)
        with self._lock:
            cached = self._cards.get(key)
        if cached is not None:
            return cached
        self._check_not_refused(key)
        where = card_key(model, version)
        raw = self.store.get(where)
        self._check_digest(model, version, CARD_FILE, raw)
        card = parse_card(where, raw)
        with self._lock:
            self._cards[key] = card
            if card.input is None:  # a table's: built with its card, it reads no file
                self._inputs[key] = InputSchema(card.features, card.unknown_categories)
        return card

    def inputs(self, model: str, version: str) -> InstanceEncoder:
        """What turns the version's instances into its graph's input: a table's InputSchema
        (built with its card), an image or a text model's dropflow.serving.media_input
        encoder (built on first use; a text model's reads its tokenizer file, refused with
        UntrustedModel unless it is its job's)."""
        key = (model, version)
        with self._lock:
            cached = self._inputs.get(key)
        if cached is not None:
            return cached
        card = self.card(model, version)
        if card.input is None:
            with self._lock:
                return self._inputs[key]  # card() built it
        from dropflow.serving import media_input  # it imports this module

        encoder: InstanceEncoder
        if card.input.kind == "image":
            encoder = media_input.ImageInput(card.input)
        else:
            self._check_not_refused(key)
            name = card.files.get(TOKENIZER_FILE_KEY) or card.input.tokenizer or ""
            data = self.store.get(artifact_key(model, version, name))
            self._check_digest(model, version, name, data)
            if card.tabular_features:
                columns = InputSchema(card.tabular_features, card.unknown_categories)
                encoder = media_input.TextTableInput(card.input, data, columns)
            else:
                encoder = media_input.TextInput(card.input, data)
        with self._lock:
            self._inputs[key] = encoder
        return encoder

    def session(self, model: str, version: str) -> ort.InferenceSession:
        """The version's onnxruntime session, created on first use and kept (LRU, budget).

        Raises UntrustedModel when its model.onnx is not the one its job published.
        Callers asking for a version that another thread is loading wait for that load and
        get its session: a large model is read, hashed and built once, not once per request
        (and the container tier's preloader) that arrives while it loads.
        """
        key = (model, version)
        with self._lock:
            held = self._sessions.get(key)
            if held is not None:
                self._sessions.move_to_end(key)
                return held.session
            load = self._loads.setdefault(key, _Load())
            load.callers += 1
        try:
            with load.lock:
                with self._lock:
                    held = self._sessions.get(key)
                    if held is not None:  # loaded while this caller waited
                        self._sessions.move_to_end(key)
                        return held.session
                return self._load(model, version)
        finally:
            with self._lock:
                load.callers -= 1
                if load.callers == 0:
                    del self._loads[key]

    @property
    def loading(self) -> dict[tuple[str, str], int]:
        """The versions whose session is being built now, each with how many callers are
        loading it or waiting for it."""
        with self._lock:
            return {key: load.callers for key, load in self._loads.items()}

    def _load(self, model: str, version: str) -> ort.InferenceSession:
        key = (model, version)
        card = self.card(model, version)
        self._check_not_refused(key)
        name = card.files.get("model", "model.onnx")
        data = self.store.get(artifact_key(model, version, name))
        self._check_digest(model, version, name, data)
        memory = session_memory_mb(len(data), self.memory_factor)
        with self._lock:
            self._evict(memory, adding=True)
        # Built outside the lock: loading a large graph must not stall requests for others.
        began = time.monotonic()
        session = open_session(data, threads=self.threads, gpu=self.gpu)
        provider = provider_in_use(session)
        # Which provider runs a model is the first thing to check when a GPU instance answers
        # at CPU speed: onnxruntime falls back to the CPU when CUDA cannot start.
        logger.info(
            "model loaded",
            extra={
                "model": model,
                "version": version,
                "model_mb": round(len(data) / 2**20, 1),
                "provider": provider,
                "seconds": round(time.monotonic() - began, 2),
            },
        )
        if self.gpu and provider != self.providers[0]:
            logger.warning(
                "model loaded on the CPU: CUDA could not start",
                extra={"model": model, "version": version, "asked": self.providers},
            )
        del data
        with self._lock:
            self._sessions[key] = _Held(session, memory, provider)
            self._sessions.move_to_end(key)
            self._evict(0.0, adding=False, keep=key)  # two loads at once may overshoot
        return session

    # ------------------------------------------------------------------ provenance
    def _recorded(self, model: str, version: str) -> tuple[str, dict[str, str]]:
        """(job id, digests) on the version's record: what its files must hash to.

        NotReadyError while the record is not there yet: promotion switches the champion
        pointer before it records the decision, for a moment.
        """
        key = (model, version)
        with self._lock:
            known = self._provenance.get(key)
        if known is not None:
            return known
        record = self.catalog.version(model, version)
        if record is None:
            raise NotReadyError(
                f"version {version!r} of model {model!r} is still being recorded by promotion",
                retry_after=NOT_READY_RETRY_AFTER,
            )
        known = (record.job_id, dict(record.digests))
        with self._lock:
            self._provenance[key] = known
        return known

    def _check_digest(self, model: str, version: str, name: str, data: bytes) -> None:
        """Refuse `data` (the version's file `name`) unless it hashes to its record's digest:
        an ERROR log, the FILE_MISMATCH_METRIC, and UntrustedModel naming the problem."""
        job_id, digests = self._recorded(model, version)
        if digests:
            problem = mismatch(name, data, digests, f"job {job_id}")
            if problem is None:
                return
            todo = (
                "it was changed after promotion checked it: restore the file, or roll the "
                f"model back (`dropflow models rollback {model}`)"
            )
        else:
            problem = "its record carries no digests (approved before dropflow recorded them)"
            todo = f"retrain {model}, or roll back to a version approved since"
        message = f"version {version!r} of model {model!r} is not served: {problem}; {todo}"
        logger.error(
            "refused a model file that is not what its job published",
            extra={"model": model, "version": version, "file": name, "problem": problem},
        )
        count_now(FILE_MISMATCH_METRIC, model=model, version=version, file=name)
        with self._lock:
            self._refused[(model, version)] = (message, self.clock())
        raise UntrustedModel(message, retry_after=NOT_READY_RETRY_AFTER)

    def _check_not_refused(self, key: tuple[str, str]) -> None:
        """Raise the version's refusal again while it is recent (see REFUSAL_HOLD_SECONDS)."""
        with self._lock:
            refused = self._refused.get(key)
        if refused is not None and self.clock() - refused[1] < REFUSAL_HOLD_SECONDS:
            raise UntrustedModel(refused[0], retry_after=NOT_READY_RETRY_AFTER)

    @property
    def memory_used_mb(self) -> float:
        """The estimated memory of the sessions held now."""
        with self._lock:
            return sum(held.memory_mb for held in self._sessions.values())

    @property
    def session_providers(self) -> dict[tuple[str, str], str]:
        """The execution provider each session held now runs on, by (model, version)."""
        with self._lock:
            return {key: held.provider for key, held in self._sessions.items()}

    @property
    def held_sessions(self) -> list[tuple[str, str]]:
        """The (model, version) of each session held now, least recently used first: the
        order in which they would be evicted."""
        with self._lock:
            return list(self._sessions)

    def _evict(
        self, incoming_mb: float, *, adding: bool, keep: tuple[str, str] | None = None
    ) -> None:
        """Drop least recently used sessions until `incoming_mb` more (one more session when
        `adding`) fits the budget and the count; never `keep`. A model larger than the budget
        ends up alone, and is served."""
        incoming = 1 if adding else 0
        used = sum(held.memory_mb for held in self._sessions.values())
        for key in list(self._sessions):
            over_budget = used + incoming_mb > self.budget_mb
            over_count = len(self._sessions) + incoming > self.max_sessions
            if not (over_budget or over_count):
                return
            if key == keep:
                continue
            used -= self._sessions.pop(key).memory_mb
            # A request still running on it keeps its reference; the memory goes after it.


class PredictionService:
    """What the HTTP routes call: predictions, the model list and a model's description.

    `served_by` is what this process is: the predict function (`lambda`), which forwards the
    versions routed `container` to `tier`, or the container tier itself (`container`), which
    serves every version it is asked for.
    """

    def __init__(
        self,
        cache: ModelCache,
        *,
        tier: ContainerClient | None = None,
        served_by: Route = SERVED_BY,
    ) -> None:
        self.cache = cache
        self.catalog = cache.catalog
        self.tier = tier
        self.served_by = served_by

    def forwarded(self, model: str, version: str) -> ContainerClient | None:
        """The tier to forward `version` to, or None when this process serves it.

        `version` must come from `servable_version`. Raises ContainerUnavailable when it is
        routed to a container tier that this deployment does not have.
        """
        if self.served_by == CONTAINER or self.cache.route(model, version) != CONTAINER:
            return None
        if self.tier is None:
            raise ContainerUnavailable(
                f"version {version!r} of model {model!r} is routed to the container tier for "
                "large models, and this deployment has none (DROPFLOW_CONTAINER_URL)",
                retry_after=NOT_READY_RETRY_AFTER,
            )
        return self.tier

    def predict(
        self,
        model: str,
        instances: Sequence[Any],
        version: str | None = None,
        *,
        media_type: str | None = None,
    ) -> dict[str, Any]:
        """Predict for `instances` (rows as lists or as {feature: value} objects; an image or
        a text model's values, see dropflow.serving.media_input). `media_type`: the image
        type of a raw image body, which `instances` then carries as its one value.

        Returns {"model", "version", "predictions", "probabilities" (classification only),
        "warnings" (only when some value was sent to the graph as unknown: per row, a list of
        warnings or None), "served_by"}; predictions are labels in the target's original
        values. A version routed to the container tier is answered by it (served_by
        "container").
        Raises InvalidName, NotFoundError, NotReadyError (ContainerUnavailable included),
        TooManyInstances, InvalidInstances, UnsupportedMedia (an image body for a model that
        takes none), or ContainerAnswered (the tier's 4xx, to pass on).
        """
        check_row_count(len(instances))
        version = self.servable_version(model, version)
        if media_type is not None:
            self.check_takes_images(model, version, media_type)
        tier = self.forwarded(model, version)
        if tier is not None:
            return tier.predict(model, version, instances)
        return self._run(model, version, instances)

    def predict_in_process(
        self,
        model: str,
        instances: Sequence[Any],
        version: str | None = None,
        *,
        media_type: str | None = None,
    ) -> dict[str, Any] | None:
        """As `predict`, but None instead of forwarding when the version is routed to the
        container tier: no network call is ever made, so a caller may safely ask again with
        `predict` (the predict function's fast path does, for anything but a plain answer)."""
        check_row_count(len(instances))
        version = self.servable_version(model, version)
        if media_type is not None:
            self.check_takes_images(model, version, media_type)
        if self.forwarded(model, version) is not None:
            return None
        return self._run(model, version, instances)

    def _run(self, model: str, version: str, instances: Sequence[Any]) -> dict[str, Any]:
        card = self.cache.card(model, version)
        encoded = self.cache.inputs(model, version).encode(instances)
        outputs = self.run_graph(model, version, encoded.batch, encoded.warnings)
        answer: dict[str, Any] = {"model": model, "version": version}
        if card.task == "classification":
            probabilities = outputs[PROBABILITIES]
            classes = card.classes or []
            answer["predictions"] = [classes[i] for i in probabilities.argmax(axis=1).tolist()]
            answer["probabilities"] = probabilities.astype(float).tolist()
        else:
            answer["predictions"] = outputs[PREDICTION].reshape(-1).astype(float).tolist()
        if encoded.warnings is not None:
            answer["warnings"] = encoded.warnings
            count_unknown_values(model, version)
        answer["served_by"] = self.served_by
        return answer

    def check_takes_images(self, model: str, version: str, media_type: str) -> None:
        """Raise UnsupportedMedia unless `version` is an image model's (a raw image body of
        `media_type` is for image models only)."""
        spec = self.cache.card(model, version).input
        if spec is not None and spec.kind == "image":
            return
        takes = "text" if spec is not None else "rows of features"
        raise UnsupportedMedia(
            f"model {model!r} takes {takes}, not images: send a JSON body "
            f'({{"instances": [...]}}, Content-Type application/json), not {media_type}'
        )

    def preload(self, route: Route = CONTAINER) -> list[tuple[str, str]]:
        """Load the session of every champion routed `route`; returns the (model, version)
        pairs loaded. The container tier calls it before it answers ready. A model that
        cannot be loaded is logged and skipped: the others are still served."""
        loaded = []
        for model in self.catalog.models():
            champion = self.catalog.champion(model)
            if champion is None or (champion.route or LAMBDA) != route:
                continue
            try:
                self.cache.session(model, champion.version)
                self.cache.inputs(model, champion.version)  # a text model's tokenizer too
            except UntrustedModel:  # logged and counted where it was refused
                continue
            except Exception:  # one broken graph must not keep the whole tier unready
                logger.exception(
                    "cannot load the model", extra={"model": model, "version": champion.version}
                )
                continue
            loaded.append((model, champion.version))
        return loaded

    def servable_version(self, model: str, version: str | None = None) -> str:
        """The version a request for `model` (pinned to `version`, or the champion) runs on.

        Raises InvalidName, NotFoundError (unknown model or version, or a rejected version)
        or NotReadyError (no champion yet, or a version still being checked).
        """
        check_model_name(model)
        if version is None:
            return self.cache.champion(model)
        check_version(version)
        self.cache.ensure_servable(model, version)
        return version

    def run_graph(
        self, model: str, version: str, batch: np.ndarray, warnings: Warnings | None = None
    ) -> dict[str, np.ndarray]:
        """The graph's raw output tensor for an already encoded `batch` (Encoded.batch)
        (`warnings`: its rows' warnings from InputSchema.encode, for the words of a refusal).

        `version` must come from `servable_version`. The answer is {"probabilities": [N, C]}
        for classification, {"prediction": [N]} for regression (see dropflow.vocabulary.card).
        """
        card = self.cache.card(model, version)
        output = PROBABILITIES if card.task == "classification" else PREDICTION
        (values,) = self.cache.session(model, version).run([output], {INPUT_NAME: batch})
        check_finite(values, warnings)
        return {output: values}

    def health(self) -> dict[str, Any]:
        """What GET /health answers. The predict function's is open to anyone (no key): only
        `{"status": "ok"}`. The container tier's, which only the VPC reaches, adds
        `served_by`, `providers` (the onnxruntime execution providers a session asks for, in
        order: CUDA first where this onnxruntime has it) and `loaded` (each session held now,
        with the provider it really runs on). Reads nothing from the store or registry."""
        if self.served_by != CONTAINER:
            return {"status": "ok"}
        loaded = [
            {"model": model, "version": version, "provider": provider}
            for (model, version), provider in self.cache.session_providers.items()
        ]
        return {
            "status": "ok",
            "served_by": self.served_by,
            "providers": list(self.cache.providers),
            "loaded": loaded,
        }

    def list_models(self) -> list[dict[str, Any]]:
        """Every known model with its champion version (None while it has none)."""
        models = []
        for name in self.catalog.models():
            champion = self.catalog.champion(name)
            models.append({"name": name, "champion": champion.version if champion else None})
        return models

    def describe_model(self, name: str) -> dict[str, Any]:
        """The champion's card in short: task, input schema, classes, metrics, versions count.

        A known model without a champion is described with `champion: None` and `ready: False`.
        """
        check_model_name(name)
        if not self.catalog.exists(name):
            raise NotFoundError(f"unknown model {name!r}: GET /models lists the models served")
        champion = self.catalog.champion(name)
        versions = self.catalog.versions(name)
        described: dict[str, Any] = {
            "name": name,
            "ready": champion is not None,
            "champion": champion.version if champion else None,
            "versions": len(versions),
            "route": (champion.route or LAMBDA) if champion else None,
        }
        if champion is None:
            return described
        card = self.cache.card(name, champion.version)
        described.update(
            task=card.task,
            target=card.target,
            features=[f.model_dump() for f in card.features],
            classes=card.classes,
            metrics={
                "primary": card.metrics.primary,
                "holdout": card.metrics.holdout,
                "baseline": card.metrics.baseline,
            },
            created_at=card.created_at,
            unknown_categories=card.unknown_categories,
        )
        if card.input is not None:
            described["input"] = card.input.model_dump(exclude_none=True)
        return described


def count_unknown_values(model: str, version: str) -> None:
    """Count UNKNOWN_VALUES_METRIC once for an answer that sent values to the graph as unknown."""
    count_now(UNKNOWN_VALUES_METRIC, model=model, version=version)


def check_finite(output: np.ndarray, warnings: Warnings | None = None) -> None:
    """Refuse a graph output holding NaN or infinity (JSON has neither), naming the rows.

    Valid float32 inputs far outside the training range can overflow inside the graph (and
    a graph without imputation turns a null into NaN): that answer is the client's values'
    doing, a 422, never a 500 or a response that breaks the API's schema. `warnings` (from
    InputSchema.encode) lets the message say when such a row held values sent as unknown.
    """
    finite = np.isfinite(output)
    if finite.all():
        return
    rows = np.flatnonzero(~finite.reshape(len(output), -1).all(axis=1))
    shown = ", ".join(str(int(r)) for r in rows[:MAX_REPORTED_PROBLEMS])
    more = "; and more after these" if len(rows) > MAX_REPORTED_PROBLEMS else ""
    why = "values far outside the training data's range overflow the model"
    unknown = [w for r in rows for w in (warnings[r] or [])] if warnings is not None else []
    if unknown:
        # A graph from before every network answered NaN: it cannot take an unknown value.
        named = ", ".join(f"feature {w['feature']!r}: {_shown(w['value'])}" for w in unknown[:3])
        why = (
            f"it holds values the training rows never had ({named}), which this version "
            f"cannot take as unknown; or {why}"
        )
    raise InvalidInstances(
        f"invalid instances: the model's output is not a finite number for row {shown}{more}: {why}"
    )


# ---------------------------------------------------------------------- input checking
# The kinds of warning a row may carry: a value the graph took as unknown (NaN).
UNKNOWN_CATEGORY = "unknown_category"  # a category value the training rows never had
MISSING_VALUE = "missing_value"  # missing, where the training rows never had a missing value
# One warning: {"feature", "value" (the client's, in short), "kind", "message"}; per row, a
# list of them or None for a row without any.
Warnings = list[list[dict[str, Any]] | None]


class _BadValue(Exception):
    """A value a feature cannot take; the message reads after "row i, feature 'f': "."""


class _Unknown(Exception):
    """A value the graph takes as unknown (NaN), answered with a warning: its kind and words."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _is_missing(value: Any) -> bool:
    """Whether a client's value spells a missing value: null, NaN, or a text training reads as
    missing (dropflow.vocabulary.datasets.MISSING_TEXT: "", "NA", "null", ...)."""
    if value is None:
        return True
    if type(value) is float:
        return math.isnan(value)
    return isinstance(value, str) and is_missing_text(value)


def _number(value: Any, nullable: bool) -> float:
    """A number feature's value as the graph reads it (NaN = missing), or _BadValue."""
    # The common case first; NaN fails the comparison and takes the long way.
    if (type(value) is float or type(value) is int) and -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return value
    if nullable and _is_missing(value):
        return math.nan  # the graph fills in the training median
    # bool is an int subclass, but `true` for a measurement is a client mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _BadValue(f"expected a number, got {describe_value(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _BadValue("number too large") from None
    if math.isnan(number):
        # Only a graph from before imputation has a feature that is not nullable.
        raise _BadValue("NaN is not allowed (send a finite number)")
    if math.isinf(number) or abs(number) > FLOAT32_MAX:
        raise _BadValue(f"{value!r} is not a finite float32 number")
    return number


def _spellings(value: Any) -> Iterable[tuple[str, Any]]:
    """The category keys a client's value may stand for (see the module docstring)."""
    if isinstance(value, bool):
        yield ("bool", value)
    elif isinstance(value, str):
        text = value.strip()
        yield ("text", text)
        if text.lower() in ("true", "false"):
            yield ("bool", text.lower() == "true")
    elif isinstance(value, int):
        yield ("text", str(value))
        yield ("text", f"{value}.0")
    elif isinstance(value, float) and math.isfinite(value):
        if value.is_integer():
            yield ("text", str(int(value)))
        yield ("text", repr(value))


def _category_key(category: bool | int | str) -> tuple[str, Any]:
    return ("bool", category) if isinstance(category, bool) else ("text", str(category))


# A value quoted in a message or a warning is cut to this many characters.
MAX_QUOTED_CHARS = 40


def _short(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


def _shown(value: Any) -> str:
    """A value as a client wrote it in JSON, shortened: 'red', 3, true, null, NaN."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, float) and not math.isfinite(value):
        return _json_spelling(value)
    return _short(repr(value))  # a number: JSON allows thousands of digits


def _json_spelling(value: float) -> str:
    # What Python's json writes (and reads) for the floats JSON has no number for.
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _warned_value(value: Any) -> Any:
    """A client's value as a warning repeats it: itself when short, else its text cut short;
    text that is not UTF-8 (a lone surrogate) escaped, as a JSON answer must be UTF-8."""
    if isinstance(value, str):
        text = _short(value)
        return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, float) and not math.isfinite(value):
        return _json_spelling(value)
    if isinstance(value, int) and not isinstance(value, bool):
        shown = str(value)
        return value if len(shown) <= MAX_QUOTED_CHARS else _short(shown)
    return value  # None, a boolean, a finite float


class _Categories:
    """Maps a category feature's raw values to their codes (indices in `categories`); a value
    the training rows never had is NaN with a warning, or a _BadValue when `reject`."""

    def __init__(self, feature: Feature, reject: bool = False) -> None:
        categories = list(feature.categories or [])
        self.reject = reject
        self.codes = {_category_key(c): float(i) for i, c in enumerate(categories)}
        # The card lists <missing> as a category: null stands for it.
        self.missing = (
            float(categories.index(MISSING_CATEGORY)) if MISSING_CATEGORY in categories else None
        )
        known = [c for c in categories if c != MISSING_CATEGORY]
        listed = ", ".join(_shown(c) for c in known[:MAX_LISTED_CATEGORIES])
        if self.missing is not None:
            listed += ", null"
        if len(known) > MAX_LISTED_CATEGORIES:
            listed += (
                f" (and {len(known) - MAX_LISTED_CATEGORIES} more: the model's description, "
                "GET /models/<model>, lists them all)"
            )
        self.known = listed

    def __call__(self, value: Any) -> float:
        if value is None:
            return self._missing(value)
        if isinstance(value, dict | list | tuple):
            raise _BadValue(f"expected a category, got {describe_value(value)}")
        for key in _spellings(value):
            code = self.codes.get(key)
            if code is not None:
                return code
        if _is_missing(value):
            return self._missing(value)
        if self.reject:
            raise _BadValue(f"unknown category {_shown(value)}; known categories: {self.known}")
        raise _Unknown(
            UNKNOWN_CATEGORY,
            f"unknown category {_shown(value)}: the training rows never had it; "
            "predicted with the value unknown",
        )

    def _missing(self, value: Any) -> float:
        """The code of a missing value (null, or a spelling of it such as "NA")."""
        if self.missing is not None:
            return self.missing
        if self.reject:
            raise _BadValue(
                f"{_spelled(value)} is not accepted: the feature had no missing values in "
                f"training; send one of {self.known}"
            )
        raise _Unknown(MISSING_VALUE, _missing_message(value))


def _spelled(value: Any) -> str:
    return "null" if value is None else f"{_shown(value)} (a missing value)"


def _missing_message(value: Any) -> str:
    return (
        f"{_spelled(value)}: the feature had no missing values in training; "
        "predicted with the value unknown"
    )


class Encoded(NamedTuple):
    """A request's rows as the graph takes them, and what was sent to it as unknown (a tuple:
    a frozen dataclass would cost the plain-number fast path a microsecond to build)."""

    # float32 [N, F] for a table; uint8 [N, H, W, 3] for images, int64 [N, L] for text,
    # float32 [N, L + T] for text with tabular columns
    batch: np.ndarray
    # Per row: the warnings of the values sent as unknown (NaN), or None for a row without
    # any; None when no row has any (the usual request).
    warnings: Warnings | None = None


class InstanceEncoder(Protocol):
    """What turns a request's instances into its graph's input: InputSchema for a table,
    dropflow.serving.media_input's encoders for images and text."""

    def encode(self, instances: Sequence[Any]) -> Encoded:
        """The graph's input for `instances`, or InvalidInstances (or TooManyInstances)."""
        ...


class InputSchema:
    """The card's features as a checker and encoder of client rows (see the module docstring).

    Built once per model version: the category lookups are ready for every request.
    """

    def __init__(
        self,
        features: Sequence[Feature | str],
        unknown_categories: UnknownCategories = ENCODE,
    ) -> None:
        """Features from a card; a bare name means a number feature that refuses null.
        `unknown_categories` is the card's: what a category value training never had gets."""
        self.features = [f if isinstance(f, Feature) else Feature(name=f) for f in features]
        self.names = [f.name for f in self.features]
        self.unknown_categories = unknown_categories
        self._known = set(self.names)
        reject = unknown_categories == REJECT
        self._encoders: list[Callable[[Any], float]] = [
            _Categories(f, reject) if f.dtype == "category" else _number_encoder(f.nullable)
            for f in self.features
        ]
        self._all_numbers = all(f.dtype != "category" for f in self.features)

    def batch(self, instances: Sequence[Any]) -> np.ndarray:
        """The float32 [N, F] input for `instances` (see `encode`), without its warnings."""
        return self.encode(instances).batch

    def encode(self, instances: Sequence[Any]) -> Encoded:
        """The float32 [N, F] input for `instances` and the warnings of each row, or
        InvalidInstances naming each problem.

        Rows are either all lists of F values in the card's feature order, or all objects
        whose keys are exactly the feature names. Problems name the row index and the feature.
        """
        shape_problem = rows_problem(instances)
        if shape_problem:
            raise InvalidInstances(f"invalid instances: {shape_problem}")
        features, n_features = self.names, len(self.names)
        as_objects = isinstance(instances[0], dict)
        if self._all_numbers and not as_objects:
            ready = _plain_numbers(instances, n_features)
            if ready is not None:
                return Encoded(ready)
        problems: list[str] = []
        warned: dict[int, list[dict[str, Any]]] = {}
        wrong_length = False  # then the feature order is what the client needs to see
        rows: list[list[float]] = []
        for i, row in enumerate(instances):
            if as_objects:
                missing = [f for f in features if f not in row]
                unknown = [k for k in row if k not in self._known]
                if missing or unknown:
                    parts = []
                    if missing:
                        parts.append(f"missing features {_names(missing)}")
                    if unknown:
                        parts.append(f"unknown features {_names(unknown)}")
                    problems.append(f"row {i}: " + "; ".join(parts))
                    continue
                values = [row[f] for f in features]
            else:
                if len(row) != n_features:
                    wrong_length = True
                    problems.append(
                        f"row {i}: has {len(row)} values, the model expects {n_features} features"
                    )
                    continue
                values = list(row)
            try:
                rows.append([encode(v) for encode, v in zip(self._encoders, values, strict=True)])
            except (_BadValue, _Unknown):
                # The slow path, for this row only: every value of it, its problems and warnings.
                encoded, warnings, bad = self._one_by_one(i, values)
                problems += bad
                if not bad:
                    rows.append(encoded)
                    warned[i] = warnings
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break
        if problems:
            shown = problems[:MAX_REPORTED_PROBLEMS]
            message = "invalid instances: " + "; ".join(shown)
            if len(problems) > len(shown):
                message += "; and more after these"
            if wrong_length:
                message += f". Features in order: {_names(features)}"
            raise InvalidInstances(message)
        batch = np.array(rows, dtype=np.float32).reshape(len(rows), n_features)
        if not warned:
            return Encoded(batch)
        return Encoded(batch, [warned.get(i) for i in range(len(rows))])

    def _one_by_one(
        self, i: int, values: Sequence[Any]
    ) -> tuple[list[float], list[dict[str, Any]], list[str]]:
        """Row `i`'s values encoded one at a time: (codes, warnings, problems)."""
        encoded: list[float] = []
        warnings: list[dict[str, Any]] = []
        problems: list[str] = []
        for encode, name, value in zip(self._encoders, self.names, values, strict=True):
            try:
                encoded.append(encode(value))
            except _Unknown as unknown:
                encoded.append(math.nan)
                warnings.append(warning(name, value, unknown.kind, unknown.message))
            except _BadValue as bad:
                problems.append(f"row {i}, feature {name!r}: {bad}")
        return encoded, warnings, problems


def warning(feature: str, value: Any, kind: str, message: str) -> dict[str, Any]:
    """One warning of a row: the feature, the client's value (in short), its kind
    (UNKNOWN_CATEGORY or MISSING_VALUE) and the words for it."""
    return {"feature": feature, "value": _warned_value(value), "kind": kind, "message": message}


def missing_value_warning(feature: str, value: Any) -> dict[str, Any]:
    """The warning for a missing `value` (null or NaN) sent for a category `feature` whose
    training rows had none, taken as unknown."""
    return warning(feature, value, MISSING_VALUE, _missing_message(value))


_PLAIN = frozenset({float, int})


def _plain_numbers(rows: Sequence[Sequence[Any]], n_features: int) -> np.ndarray | None:
    """The float32 batch when every row has `n_features` finite JSON numbers within float32
    (the usual request), checked with numpy at once; None sends the rows through the per-value
    checks, which also word the errors. Value for value the same result as those checks."""
    if any(len(row) != n_features for row in rows):
        return None
    # bool is not in _PLAIN (type(True) is bool), None neither: both take the long way.
    if not set(map(type, chain.from_iterable(rows))) <= _PLAIN:
        return None
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        return None
    # One comparison refuses NaN and infinity too: both compare False.
    if not (np.abs(values) <= FLOAT32_MAX).all():
        return None
    return values.astype(np.float32).reshape(len(rows), n_features)


def _number_encoder(nullable: bool) -> Callable[[Any], float]:
    def encode(value: Any) -> float:
        return _number(value, nullable)

    return encode


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def to_batch(
    instances: Sequence[Any],
    features: Sequence[Feature | str],
    unknown_categories: UnknownCategories = ENCODE,
) -> np.ndarray:
    """The float32 [N, F] input for `instances` (see InputSchema.batch), for one-off callers.

    `features` are the card's Features, or bare names for number features that refuse null;
    `unknown_categories` the card's.
    """
    return InputSchema(features, unknown_categories).batch(instances)
