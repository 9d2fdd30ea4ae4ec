"""The container tier for large models: dropflow's HTTP API on uvicorn, on EC2 (serving.server)."""
