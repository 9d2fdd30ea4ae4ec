"""Registry on a DynamoDB table (key schema: pk HASH S, sk RANGE S).

Each item holds `data` as JSON text (DynamoDB's own number type would hand floats back as
Decimal), `revision` (N), `writer` (S, a random id of the call that last wrote it) and
optionally `expires_at` (N, whole epoch seconds), the table's TTL attribute. TTL deletes
lazily, up to days late, so every read and condition also checks `expires_at` against the clock.

Why `writer`: botocore retries a request whose answer was lost (a timeout, a reset connection,
a 5xx), and a conditional write may have landed on the first try. The retry then fails its own
condition, against its own item. DynamoDB's ALL_OLD answer on that failure names the item's
writer, so the adapter tells "someone else won" from "I won, and the answer got lost": without
it, a claim the launcher made would read as a duplicate and nobody would train that data.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from dropflow.errors import ConfigError
from dropflow.ports import Record

_CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"})
_ABSENT = "attribute_not_exists(pk) OR expires_at <= :now"
_LIVE = "attribute_not_exists(expires_at) OR expires_at > :now"
# put() is read-free: it bumps a live item's revision or creates a fresh one. Between the two
# conditional writes another writer may slip in; a handful of rounds always settles it.
_PUT_ROUNDS = 10
_WRITER = "writer"


class DynamoRegistry:
    """A Registry stored in the DynamoDB table `table`.

    `client` is a boto3 DynamoDB client to use (tests pass one); by default one is created
    on first use and shared by every thread.
    """

    def __init__(self, table: str, client: Any = None) -> None:
        if not table:
            raise ValueError("DynamoRegistry needs a table name")
        self.table = table
        self._client = client
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DynamoRegistry({self.table!r})"

    @property
    def client(self) -> Any:
        """The boto3 DynamoDB client, created once on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.client("dynamodb", config=_CLIENT_CONFIG)
        return self._client

    # ------------------------------------------------------------------ reads
    def get(self, pk: str, sk: str) -> Record | None:
        """The live record at (pk, sk), or None if there is none or it has expired."""
        resp = self._call("get_item", TableName=self.table, Key=_key(pk, sk), ConsistentRead=True)
        item = resp.get("Item")
        if item is None or _expired(item, time.time()):
            return None
        return _record(item)

    def query(self, pk: str, *, sk_prefix: str = "") -> list[Record]:
        """Live records under `pk` whose sk starts with `sk_prefix`, sorted by sk."""
        values: dict[str, Any] = {":pk": {"S": _part("pk", pk)}, ":now": _n(time.time())}
        condition = "pk = :pk"
        if sk_prefix:  # DynamoDB refuses an empty string in a key condition
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": sk_prefix}
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.table,
            KeyConditionExpression=condition,
            FilterExpression=_LIVE,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        )
        found = []
        try:
            for page in pages:
                found.extend(_record(item) for item in page.get("Items", []))
        except ClientError as exc:
            raise self._explain(exc) from exc
        return found  # DynamoDB returns a partition in sk (UTF-8 byte) order

    # ------------------------------------------------------------------ writes
    def put(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> Record:
        """Write the record unconditionally; returns it with its new revision."""
        text = _encode(data)
        for _ in range(_PUT_ROUNDS):
            now = time.time()
            # Bump the revision of a live item...
            values: dict[str, Any] = {
                ":data": {"S": text},
                ":one": {"N": "1"},
                ":now": _n(now),
            }
            update = "SET #data = :data, revision = revision + :one"
            if expires_at is None:
                update += " REMOVE expires_at"
            else:
                update += ", expires_at = :exp"
                values[":exp"] = _n(_ceil(expires_at))
            try:
                resp = self._call(
                    "update_item",
                    TableName=self.table,
                    Key=_key(pk, sk),
                    UpdateExpression=update,
                    ConditionExpression=f"attribute_exists(pk) AND ({_LIVE})",
                    ExpressionAttributeNames={"#data": "data"},
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
                return _record(resp["Attributes"])
            except _ConditionFailed:
                pass
            # ...or create it afresh where there is none (or only an expired one).
            item = _item(pk, sk, text, 1, expires_at)
            if self._put_if(item, _ABSENT, now):
                return _record(item)
        raise RuntimeError(
            f"registry put {pk!r}/{sk!r} in table {self.table}: "
            f"still contended after {_PUT_ROUNDS} rounds"
        )

    def put_if_absent(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> bool:
        """Create the record (revision 1) unless a live one exists; True if created."""
        item = _item(pk, sk, _encode(data), 1, expires_at)
        return self._put_if(item, _ABSENT, time.time())

    def compare_and_set(
        self,
        pk: str,
        sk: str,
        data: dict[str, Any],
        *,
        expected_revision: int,
        expires_at: float | None = None,
    ) -> bool:
        """Replace the live record if its revision is `expected_revision`; True if replaced.

        The new record gets revision `expected_revision + 1` and exactly `expires_at`
        (None: never expires).
        """
        item = _item(pk, sk, _encode(data), int(expected_revision) + 1, expires_at)
        return self._put_if(
            item,
            f"revision = :expected AND ({_LIVE})",
            time.time(),
            {":expected": {"N": str(int(expected_revision))}},
        )

    def delete(self, pk: str, sk: str) -> None:
        """Remove the record; a missing one is not an error."""
        self._call("delete_item", TableName=self.table, Key=_key(pk, sk))

    # ------------------------------------------------------------------ internals
    def _put_if(
        self,
        item: dict[str, Any],
        condition: str,
        now: float,
        values: dict[str, Any] | None = None,
    ) -> bool:
        # The id travels unchanged through botocore's retries of this one call.
        item = {**item, _WRITER: {"S": _new_writer()}}
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeValues={":now": _n(now), **(values or {})},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            # Our own item, written by an earlier try whose answer was lost: we won.
            return failed.item is not None and failed.item.get(_WRITER) == item[_WRITER]
        return True

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise _ConditionFailed(exc.response.get("Item")) from None
            raise self._explain(exc) from exc

    def _explain(self, exc: ClientError) -> Exception:
        if _code(exc) == "ResourceNotFoundException":
            return ConfigError(
                f"DynamoDB table {self.table!r} does not exist in this account/region: "
                "check DROPFLOW_REGISTRY_URL and that the stack is deployed"
            )
        return exc


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold (the normal 'lost the race' answer).

    `item` is the item as it stood (DynamoDB's ALL_OLD), when it existed and was asked for.
    """

    def __init__(self, item: dict[str, Any] | None = None) -> None:
        super().__init__("condition failed")
        self.item = item


def _new_writer() -> str:
    return secrets.token_hex(12)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _part(name: str, value: str) -> str:
    # DynamoDB refuses empty key attributes with a cryptic message; say it plainly.
    if not isinstance(value, str) or not value:
        raise ValueError(f"registry {name} must be a non-empty string, got {value!r}")
    return value


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": _part("pk", pk)}, "sk": {"S": _part("sk", sk)}}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


def _ceil(expires_at: float) -> int:
    # TTL wants whole seconds; rounding up never ends a record early.
    return math.ceil(expires_at)


def _encode(data: dict[str, Any]) -> str:
    if not isinstance(data, dict):
        raise TypeError(f"registry data must be a dict, got {type(data).__name__}")
    # allow_nan=False: NaN is not JSON, and other readers of the record would choke on it.
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _item(pk: str, sk: str, text: str, revision: int, expires_at: float | None) -> dict[str, Any]:
    item = {**_key(pk, sk), "data": {"S": text}, "revision": {"N": str(revision)}}
    if expires_at is not None:
        item["expires_at"] = {"N": str(_ceil(expires_at))}
    return item


def _expired(item: dict[str, Any], now: float) -> bool:
    return "expires_at" in item and float(item["expires_at"]["N"]) <= now


def _record(item: dict[str, Any]) -> Record:
    expires = item.get("expires_at")
    return Record(
        pk=item["pk"]["S"],
        sk=item["sk"]["S"],
        data=json.loads(item["data"]["S"]),
        revision=int(item["revision"]["N"]),
        expires_at=float(expires["N"]) if expires else None,
    )
