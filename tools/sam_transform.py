"""Expand template.yaml into the plain CloudFormation that SAM would deploy, without AWS.

    .venv-sam/bin/python tools/sam_transform.py OUT.json [--template template.yaml]
        [--region us-east-1] [--parameter-overrides Key=Value ...] [--pass-metadata]

The output is what cfn-lint and checkov check in `make lint`: linting the expanded template
catches mistakes in what SAM generates (roles, permissions, event rules, the API stage), which
linting the short SAM form alone can miss. Runs with the SAM venv's python (samtranslator and
cfn-lint live there).

--pass-metadata copies each SAM resource's Metadata onto every resource SAM generates from it
(samtranslator's passthrough_metadata). Without it SAM keeps Metadata on a function's Lambda
function and an API's RestApi only, and drops a layer's: a checkov skip written beside a SAM
resource in template.yaml would not reach its API stage or layer version. CloudFormation does
not read Metadata, so nothing else in the output changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cfnlint.decode import decode
from samtranslator.translator.transform import transform

# SAM looks a managed policy name up only when a function's Policies names one by its bare
# name. The real loader asks IAM for the whole list; these few cover what a SAM template
# names in practice, and an unknown name fails the transform instead of calling AWS.
_KNOWN_MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for path, name in (
        ("service-role/", "AWSLambdaBasicExecutionRole"),
        ("service-role/", "AWSLambdaVPCAccessExecutionRole"),
        ("", "AWSXrayWriteOnlyAccess"),
        ("", "CloudWatchLambdaInsightsExecutionRolePolicy"),
        ("", "AmazonS3ReadOnlyAccess"),
        ("", "AmazonDynamoDBReadOnlyAccess"),
    )
}


class KnownPoliciesLoader:
    """A managed-policy loader that answers from a fixed map and never calls IAM."""

    def load(self) -> dict[str, str]:
        return dict(_KNOWN_MANAGED_POLICIES)


def parameter_values(region: str, overrides: dict[str, str]) -> dict[str, Any]:
    """The values SAM may substitute while expanding: the region, and any overrides.

    Parameters left out stay as Ref in the output (SAM fills in defaults itself), so the
    expanded template is the one CloudFormation would receive, not one with guessed values.
    """
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    if region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return {"AWS::Region": region, "AWS::Partition": partition, **overrides}


def load_template(path: Path) -> dict[str, Any]:
    """The template as a dict, short tags (!Ref, !Sub...) expanded as CloudFormation does."""
    template, matches = decode(str(path))
    if matches or template is None:
        problems = "; ".join(str(m) for m in matches) or "could not be parsed"
        raise SystemExit(f"{path}: {problems}")
    # cfn-lint's decoder returns dict subclasses that carry line marks; plain JSON round-trip
    # gives samtranslator the ordinary dicts it expects.
    return json.loads(json.dumps(template))


# The properties where SAM expects code already uploaded to S3 (what `sam package` does).
_CODE_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::Api": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


def as_packaged(template: dict[str, Any]) -> dict[str, Any]:
    """Point every local code path at a placeholder S3 URI, as `sam package` would.

    samtranslator accepts only S3 locations; the placeholder keeps the local path readable
    in the output (s3://packaged/functions/predict).
    """
    for resource in (template.get("Resources") or {}).values():
        prop = _CODE_PROPERTIES.get(resource.get("Type", ""))
        properties = resource.get("Properties") or {}
        location = properties.get(prop) if prop else None
        if isinstance(location, str) and not location.startswith("s3://"):
            properties[prop] = f"s3://packaged/{location.strip('./')}"
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the CloudFormation JSON")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values (the others keep their default or stay a Ref)",
    )
    parser.add_argument(
        "--pass-metadata",
        action="store_true",
        help="copy each SAM resource's Metadata (checkov skips) onto every resource it generates",
    )
    args = parser.parse_args(argv)

    overrides: dict[str, str] = {}
    for item in args.parameter_overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter-overrides: {item!r} is not KEY=VALUE")
        overrides[key] = value

    # The translator warns about feature toggles it has no config for; that is the normal
    # state outside the CloudFormation service and says nothing about the template.
    logging.getLogger("samtranslator.feature_toggle").setLevel(logging.ERROR)
    template = as_packaged(load_template(args.template))
    # samtranslator reads the region from a fresh boto3 session; with it in the environment
    # that lookup stays local (no credentials are read, no request is sent).
    os.environ["AWS_DEFAULT_REGION"] = args.region
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        expanded = transform(
            template,
            parameter_values(args.region, overrides),
            KnownPoliciesLoader(),  # type: ignore[arg-type]
            passthrough_metadata=args.pass_metadata,
        )
    except Exception as exc:  # samtranslator reports every template error this way
        print(f"{args.template}: SAM transform failed: {exc}", file=sys.stderr)
        return 1

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(expanded, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.output} ({len(expanded.get('Resources', {}))} resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
