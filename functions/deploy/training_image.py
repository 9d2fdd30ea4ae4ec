"""What the launch template must know of the training AMI, read from the AMI itself.

Custom::TrainingImage, properties ImageId and VolumeGiB. Answers RootDeviceName (the block
device mapping must name the AMI's own root device: /dev/xvda on Amazon Linux, /dev/sda1 on
Ubuntu; a mapping under another name adds a second volume and leaves the root at its snapshot
size) and Name. Refuses, failing the deploy before any instance is paid for, an AMI that is
not x86_64 (the training instance types are) or whose root snapshot is larger than the volume
asked for ("DescribeImages",
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html).
"""

from __future__ import annotations

from typing import Any

import boto3
from custom_resource import Answer, Request, StepRefused, handler_for


def describe(client: Any, image_id: str, volume_gib: int) -> dict[str, str]:
    images = client.describe_images(ImageIds=[image_id])["Images"]
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
