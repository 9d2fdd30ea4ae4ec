"""What the launch template must know of the training AMI, read from the AMI itself.

Custom::TrainingImage, properties ImageId and VolumeGiB. Answers RootDeviceName (the block
device mapping must name the AMI's own root device: /dev/xvda on Amazon Linux, /dev/sda1 on
Ubuntu; a mapping under another name adds a second volume and leaves the root at its snapshot
size) and Name. Refuses, failing the deploy before any instance is paid for, an AMI this
account cannot see, one that cannot launch (not available, or not EBS-backed: the launch
template gives the root device an EBS volume), one that is not x86_64 (the training instance
types are) or one whose root snapshot is larger than the volume asked for ("DescribeImages",
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError
from custom_resource import Answer, Request, StepRefused, handler_for


def describe(client: Any, image_id: str, volume_gib: int) -> dict[str, str]:
    """RootDeviceName and Name of the AMI; StepRefused where it cannot serve training."""
    try:
        images = client.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as exc:
        # InvalidAMIID.NotFound (deregistered, another region, not shared with this account)
        # or InvalidAMIID.Malformed (not an AMI id): the parameter is what must change.
        if not exc.response["Error"]["Code"].startswith("InvalidAMIID."):
            raise
        raise StepRefused(
            f"TrainingAmiId: {image_id} cannot be used here "
            f"({exc.response['Error']['Code']}: {exc.response['Error'].get('Message', '')}); "
            "name an x86_64 PyTorch Deep Learning AMI of this region, or the SSM parameter "
            "that holds one"
        ) from exc
    if not images:
        raise StepRefused(
            f"TrainingAmiId: no image {image_id} is visible to this account in this region"
        )
    image = images[0]
    name = image.get("Name", image_id)
    if image.get("Architecture") != "x86_64":
        raise StepRefused(
            f"TrainingAmiId: {image_id} ({name}) is {image.get('Architecture')}, and the "
            "training instance types (g4dn, g5, g6, p) are x86_64; use an x86_64 PyTorch "
            "Deep Learning AMI parameter"
        )
    state = image.get("State", "available")
    if state != "available":
        raise StepRefused(
            f"TrainingAmiId: {image_id} ({name}) is {state}, and only an available AMI "
            "launches; use another AMI, or deploy again once it is available"
        )
    if image.get("RootDeviceType", "ebs") != "ebs":
        raise StepRefused(
            f"TrainingAmiId: {image_id} ({name}) has an {image.get('RootDeviceType')} root "
            "device, and the launch template gives the root an EBS volume; use an EBS-backed AMI"
        )
    root = image.get("RootDeviceName")
    if not root:
        raise StepRefused(f"TrainingAmiId: {image_id} ({name}) names no root device")
    for mapping in image.get("BlockDeviceMappings", []):
        size = mapping.get("Ebs", {}).get("VolumeSize")
        if mapping.get("DeviceName") == root and size and size > volume_gib:
            raise StepRefused(
                f"TrainingVolumeGiB is {volume_gib}, smaller than the {size} GiB root "
                f"snapshot of {image_id} ({name}); set TrainingVolumeGiB to {size} or more"
            )
    return {"RootDeviceName": root, "Name": name}


def step(request: Request) -> Answer:
    image_id = str(request.properties["ImageId"])
    if request.type == "Delete":
        return Answer(request.physical_id or image_id)  # nothing was made
    data = describe(boto3.client("ec2"), image_id, int(request.properties["VolumeGiB"]))
    return Answer(
        image_id, data, reason=f"{image_id}: {data['Name']}, root {data['RootDeviceName']}"
    )


handler = handler_for(step)
