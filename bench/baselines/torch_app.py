"""Baseline (b): the classic Lambda + torch.load handler.

The trained network's class is imported, its state dict is torch.load-ed at cold start, and
each request goes JSON -> torch tensor -> forward under no_grad -> JSON. BENCH_MODEL_DIR holds
model.pt (the state dict), config.json (the constructor's arguments) and classes.json.
"""

import json
import os

import torch

from training.model import Network

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
with open(os.path.join(MODEL_DIR, "config.json")) as f:
    CONFIG = json.load(f)
with open(os.path.join(MODEL_DIR, "classes.json")) as f:
    CLASSES = json.load(f)
MODEL = Network(**CONFIG)
MODEL.load_state_dict(
    torch.load(os.path.join(MODEL_DIR, "model.pt"), map_location="cpu", weights_only=True)
)
MODEL.eval()


def lambda_handler(event, context):
    rows = json.loads(event["body"])["instances"]
    with torch.no_grad():
        probabilities = MODEL(torch.tensor(rows, dtype=torch.float32))
    body = {
        "predictions": [CLASSES[i] for i in probabilities.argmax(dim=1).tolist()],
        "probabilities": probabilities.tolist(),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
