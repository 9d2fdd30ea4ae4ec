"""Baseline (b): the classic Lambda + torch.load handler.

The trained network was saved whole (torch.save of the module), so whatever network the job
trained loads here the way such handlers load a model: torch.load at cold start, which imports
the network's class (training.*, and the packages it builds on) to unpickle it. Each request
goes JSON -> torch tensor -> forward under no_grad -> JSON. BENCH_MODEL_DIR holds model.pt and
classes.json.
"""

import json
import os

import torch

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
with open(os.path.join(MODEL_DIR, "classes.json")) as f:
    CLASSES = json.load(f)
# A whole module is a pickle, not weights alone: weights_only=False. The file is the one the
# benchmark itself wrote a moment before, from the job's own checkpoint.
MODEL = torch.load(os.path.join(MODEL_DIR, "model.pt"), map_location="cpu", weights_only=False)
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
