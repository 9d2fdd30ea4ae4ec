"""Baseline (a): the minimal onnxruntime handler a person writes by hand.

API Gateway proxy event body JSON -> numpy -> session.run -> JSON body. No input checks, no
routing, no logging: the floor that dropflow's predict handler is measured against.
BENCH_MODEL_DIR holds model.onnx and classes.json.
"""

import json
import os

import numpy as np
import onnxruntime as ort

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
SESSION = ort.InferenceSession(
    os.path.join(MODEL_DIR, "model.onnx"), providers=["CPUExecutionProvider"]
)
with open(os.path.join(MODEL_DIR, "classes.json")) as f:
    CLASSES = json.load(f)


def lambda_handler(event, context):
    rows = json.loads(event["body"])["instances"]
    (probabilities,) = SESSION.run(["probabilities"], {"input": np.asarray(rows, np.float32)})
    body = {
        "predictions": [CLASSES[i] for i in probabilities.argmax(axis=1)],
        "probabilities": probabilities.tolist(),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
