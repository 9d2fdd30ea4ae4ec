"""The training queue: which jobs hold one of the stack's training slots, and who waits.

At most `cap` training jobs run at once across all models (the stack owner's
TrainingMaxConcurrentJobs, dropflow.vocabulary.limits). The registry holds one record, pk
TRAINING / sk QUEUE:

    running   {job id: when it took its slot}   the jobs that hold a slot
    waiting   [[created_at, job id], ...]        the jobs waiting for one, oldest first

Every change is one compare-and-set of that record, so concurrent launch and track functions
(separate Lambda environments, or threads) never hand out more slots than the cap, and each
move from `waiting` to `running` is made by exactly one caller: the one whose `fill` returned
that job, who then launches it. A job keeps its slot from its first launch to its end, across
relaunches after interruptions; its end (publish, failure, a launch that failed) frees it.
Waiting is first-come first-served by the job's creation time, so a job put back (its
enqueue was lost) takes its own place, not the back of the line.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dropflow.errors import ConcurrentUpdate
from dropflow.ports import Registry

QUEUE_PK, QUEUE_SK = "TRAINING", "QUEUE"
# Compare-and-set rounds before giving up; a round that lost sleeps a few ms, growing.
_ROUNDS = 200


@dataclass(frozen=True)
class QueueState:
    """The queue as read at one revision."""

    running: dict[str, float] = field(default_factory=dict)  # job id -> when it took its slot
    waiting: list[tuple[float, str]] = field(default_factory=list)  # (created_at, job id)

    def holds(self, job_id: str) -> bool:
        return job_id in self.running

    def position(self, job_id: str) -> int | None:
        """The job's place in line (1: next to start), None when it is not waiting."""
        for number, (_, waiting) in enumerate(self.waiting, start=1):
            if waiting == job_id:
                return number
        return None

    def to_data(self) -> dict[str, Any]:
        return {"running": dict(self.running), "waiting": [list(w) for w in self.waiting]}

    @staticmethod
    def from_data(data: dict[str, Any]) -> QueueState:
        running = {str(k): float(v) for k, v in (data.get("running") or {}).items()}
        waiting = sorted((float(at), str(job)) for at, job in data.get("waiting") or [])
        return QueueState(running, waiting)


class TrainingQueue:
    """The stack's training slots and the line for them, in `registry`."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.clock = clock

    def state(self) -> QueueState:
        """The queue as it is now (empty when no job ever queued)."""
        rec = self.registry.get(QUEUE_PK, QUEUE_SK)
        return QueueState.from_data(rec.data) if rec else QueueState()

    def enqueue(self, job_id: str, created_at: float) -> int | None:
        """Put the job in line (by its creation time) unless it holds a slot or is in line
        already. Returns its place in line, None when it holds a slot."""

        def change(state: QueueState) -> QueueState:
            if state.holds(job_id) or state.position(job_id) is not None:
                return state
            waiting = sorted([*state.waiting, (float(created_at), job_id)])
            return QueueState(state.running, waiting)

        return self._update(change).position(job_id)

    def fill(self, cap: int) -> list[str]:
        """Give free slots (at most `cap` held in all) to the jobs first in line. Returns the
        jobs this call moved: the caller launches each of them, nobody else will."""
        moved: list[str] = []

        def change(state: QueueState) -> QueueState:
            moved.clear()
            room = cap - len(state.running)
            if room <= 0 or not state.waiting:
                return state
            now = self.clock()
            starting = state.waiting[:room]
            moved.extend(job for _, job in starting)
            running = {**state.running, **{job: now for _, job in starting}}
            return QueueState(running, state.waiting[len(starting) :])

        self._update(change)
        return list(moved)

    def release(self, job_id: str) -> bool:
        """Free the job's slot, or take it out of line. True when it had either."""
        return bool(self.forget([job_id]))

    def forget(self, job_ids: Iterable[str]) -> list[str]:
        """Free the slots of these jobs and take them out of line (jobs that ended, or that
        no longer exist). Returns those that had a slot or a place."""
        gone = set(job_ids)
        found: list[str] = []

        def change(state: QueueState) -> QueueState:
            found.clear()
            found.extend(j for j in state.running if j in gone)
            found.extend(j for _, j in state.waiting if j in gone)
            if not found:
                return state
            running = {j: at for j, at in state.running.items() if j not in gone}
            return QueueState(running, [w for w in state.waiting if w[1] not in gone])

        self._update(change)
        return list(found)

    def _update(self, change: Callable[[QueueState], QueueState]) -> QueueState:
        """Apply `change` to the current state with compare-and-set, retrying on conflicts;
        the state written (or the current one, when `change` changed nothing)."""
        for round_ in range(_ROUNDS):
            rec = self.registry.get(QUEUE_PK, QUEUE_SK)
            current = QueueState.from_data(rec.data) if rec else QueueState()
            new = change(current)
            if new == current:
                return current
            if rec is None:
                written = self.registry.put_if_absent(QUEUE_PK, QUEUE_SK, new.to_data())
            else:
                written = self.registry.compare_and_set(
                    QUEUE_PK, QUEUE_SK, new.to_data(), expected_revision=rec.revision
                )
            if written:
                return new
            # Many writers at once (a burst of drops): spread the retries out a little.
            time.sleep(random.uniform(0, 0.002 * min(round_ + 1, 25)))
        raise ConcurrentUpdate(
            f"the training queue ({QUEUE_PK}/{QUEUE_SK}) kept changing under {_ROUNDS} "
            "attempts to update it; try again"
        )
