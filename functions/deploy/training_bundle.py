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
it at once, never holding the whole zip in memory.
"""

from __future__ import annotations

import base64
import re
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError
from custom_resource import Answer, Request, StepRefused, handler_for

_LAYER_ARN = re.compile(
    r"^arn:[\w-]+:lambda:[\w-]+:\d{12}:layer:(?P<name>[\w-]+):(?P<version>\d+)$"
)


def bundle_key(prefix: str, layer_arn: str, code_sha256: str) -> str:
    match = _LAYER_ARN.match(layer_arn)
    if match is None:
        raise StepRefused(f"LayerArn {layer_arn!r} is not a layer version ARN")
    digest = base64.b64decode(code_sha256).hex()[:16]
    return f"{prefix}{match['name']}-{match['version']}-{digest}.zip"


def copy(lambda_client: Any, s3: Any, layer_arn: str, bucket: str, prefix: str) -> str:
    layer = lambda_client.get_layer_version_by_arn(Arn=layer_arn)
    key = bundle_key(prefix, layer_arn, layer["Content"]["CodeSha256"])
    with urllib.request.urlopen(layer["Content"]["Location"], timeout=60) as download:
        s3.upload_fileobj(
            download,
            bucket,
            key,
            ExtraArgs={"ContentType": "application/zip", "Metadata": {"layer": layer_arn}},
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
        # Only an object this resource wrote: a failed Create answered no key.
        if request.physical_id.startswith(prefix):
            remove(s3, bucket, request.physical_id)
        return Answer(request.physical_id)
    key = copy(boto3.client("lambda"), s3, str(request.properties["LayerArn"]), bucket, prefix)
    return Answer(key, {"Key": key}, reason=f"s3://{bucket}/{key}")


handler = handler_for(step)
