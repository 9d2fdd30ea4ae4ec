"""Put the training bundle where a training instance can fetch it: the stack's bucket.

Custom::TrainingBundle, properties LayerArn, Bucket and Prefix. `sam deploy` uploads the
bundle (training/Makefile: the training package, the dropflow package and the wheels of
everything the job imports beside the AMI's torch) as a layer version of the stack; this step
copies that version's zip to s3://Bucket/Prefix<name>-<version>-<sha>.zip and answers the key.
An instance then needs S3 alone (a gateway endpoint is enough): not the Lambda API, not PyPI.

The key changes with every new layer version, so CloudFormation deletes the previous object
once an update has succeeded ("Custom resources - replacing a custom resource",
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html),
and the stack's deletion deletes the last one. The layer's content URL is presigned for ten
minutes ("GetLayerVersionByArn",
https://docs.aws.amazon.com/lambda/latest/api/API_GetLayerVersionByArn.html): the copy streams
it at once, never holding the whole zip in memory, and checks what it read against the
layer's CodeSha256 (a cut download would otherwise leave a broken bundle that only fails on a
paid instance).
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError
from custom_resource import Answer, Request, StepRefused, handler_for

_LAYER_ARN = re.compile(
    r"^arn:[\w-]+:lambda:[\w-]+:\d{12}:layer:(?P<name>[\w-]+):(?P<version>\d+)$"
)


def layer_version(layer_arn: str) -> re.Match[str]:
    match = _LAYER_ARN.match(layer_arn)
    if match is None:
        raise StepRefused(
            f"LayerArn {layer_arn!r} is not a layer version ARN "
            "(arn:aws:lambda:<region>:<account>:layer:<name>:<version>)"
        )
    return match


def bundle_key(prefix: str, layer_arn: str, code_sha256: str) -> str:
    """Prefix<name>-<version>-<16 hex of the zip's SHA-256>.zip"""
    match = layer_version(layer_arn)
    digest = base64.b64decode(code_sha256).hex()[:16]
    return f"{prefix}{match['name']}-{match['version']}-{digest}.zip"


def is_bundle_key(prefix: str, key: str) -> bool:
    """Whether `key` is one bundle_key wrote: a failed Create answers its logical id instead."""
    return re.fullmatch(re.escape(prefix) + r"[\w-]+-\d+-[0-9a-f]{16}\.zip", key) is not None


class _Hashing:
    """A stream that keeps the SHA-256 of what was read through it (read only, not seekable,
    so the upload streams it in parts)."""

    def __init__(self, stream: Any) -> None:
        self._stream, self.sha256, self.size = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def copy(lambda_client: Any, s3: Any, layer_arn: str, bucket: str, prefix: str) -> str:
    """Copy the layer version's zip to s3://bucket/<bundle_key>; answers the key."""
    layer_version(layer_arn)  # a malformed ARN is refused before any call
    layer = lambda_client.get_layer_version_by_arn(Arn=layer_arn)
    content = layer["Content"]
    key = bundle_key(prefix, layer_arn, content["CodeSha256"])
    with urllib.request.urlopen(content["Location"], timeout=60) as download:
        read = _Hashing(download)
        s3.upload_fileobj(
            read,
            bucket,
            key,
            ExtraArgs={"ContentType": "application/zip", "Metadata": {"layer": layer_arn}},
        )
    if read.sha256.digest() != base64.b64decode(content["CodeSha256"]):
        remove(s3, bucket, key)
        raise StepRefused(
            f"the copy of {layer_arn} read {read.size} bytes whose SHA-256 is not the layer's "
            f"CodeSha256 ({content.get('CodeSize', '?')} bytes); nothing was kept, deploy again"
        )
    return key


def remove(s3: Any, bucket: str, key: str) -> None:
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        # A retained bucket emptied by hand, or a bundle never written: nothing to delete.
        if exc.response["Error"]["Code"] not in {"NoSuchKey", "NoSuchBucket"}:
            raise


def step(request: Request) -> Answer:
    bucket, prefix = str(request.properties["Bucket"]), str(request.properties["Prefix"])
    s3 = boto3.client("s3")
    if request.type == "Delete":
        # Only an object this resource wrote: a failed Create answered its logical id.
        if is_bundle_key(prefix, request.physical_id):
            remove(s3, bucket, request.physical_id)
        return Answer(request.physical_id)
    key = copy(boto3.client("lambda"), s3, str(request.properties["LayerArn"]), bucket, prefix)
    return Answer(key, {"Key": key}, reason=f"s3://{bucket}/{key}")


handler = handler_for(step)
