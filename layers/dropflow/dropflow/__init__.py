"""dropflow: keep an ML model fresh on AWS for the least money.

The domain package shared by the Lambda functions (as a layer), the training job and the
local runtime. Nothing here imports torch; only the AWS adapters import boto3.
"""

__version__ = "0.1.0"
