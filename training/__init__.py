"""What runs on the training instance: `python -m training --job-id J --attempt N`.

Reads datasets/<model>/ from the bucket, trains a PyTorch network, exports it to ONNX, checks
parity with onnxruntime and publishes models/<model>/<version>/ (see training.job). What differs
between kinds of data is a model family (training.families; tabular, an MLP, by default); the
rest is the same for all. This is the only place besides serving/ that imports torch; the
Lambda functions never do.
"""
