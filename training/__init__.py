"""What runs on the training instance: `python -m training --job-id J --attempt N`.

Reads datasets/<model>/ from the bucket, trains a PyTorch MLP, exports it to ONNX, checks
parity with onnxruntime and publishes models/<model>/<version>/ (see training.job). This is the
only place besides serving/ that imports torch; the Lambda functions never do.
"""
