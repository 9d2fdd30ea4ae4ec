"""S3Store in a forked child (a DataLoader worker decoding images): a client of its own.

A boto3 client's pooled connections, copied into a child by fork, would carry the parent's
and the child's requests on one socket; the store must make the child a new client, and still
read the same bucket through it.
"""

from __future__ import annotations

import multiprocessing

import boto3
from moto import mock_aws

from dropflow.adapters.aws.s3_store import S3Store

BUCKET = "dropflow-fork"


def _child(store: S3Store, answers: multiprocessing.SimpleQueue) -> None:
    inherited = store._client
    answers.put((store.client is not inherited, store.get("datasets/pets/cat/a.png")))


def test_a_forked_child_reads_through_a_client_of_its_own():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET)
        store.put("datasets/pets/cat/a.png", b"pixels")
        parent = store.client
        context = multiprocessing.get_context("fork")
        answers = context.SimpleQueue()

        child = context.Process(target=_child, args=(store, answers))
        child.start()
        child.join(timeout=60)

        assert child.exitcode == 0
        assert answers.get() == (True, b"pixels")
        assert store.client is parent  # the parent keeps its own


def test_a_client_given_to_the_store_is_kept_in_a_child():
    # Tests hand the store a client (moto's); the store leaves what it was given alone.
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET, client=client)
        context = multiprocessing.get_context("fork")
        answers = context.SimpleQueue()
        store.put("datasets/pets/cat/a.png", b"pixels")

        child = context.Process(target=_child, args=(store, answers))
        child.start()
        child.join(timeout=60)

        assert answers.get() == (False, b"pixels")
