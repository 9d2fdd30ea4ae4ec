"""dropflow: keep an ML model fresh on AWS for the least money.

The package the Lambda functions share (as a layer) and the training instance runs with. Its
rooms, from the doors down (docs/architecture.md draws them, `make lint` holds the direction):

  wiring, config     build the services from the environment; the only place adapters are chosen
  control            the training control plane: launcher, tracker
  promotion          the gate, routing's decision, retention, rollback, sizing the tier
  serving            sessions, input schema, predictions, the HTTP API and Open Inference Protocol
  records            what the registry holds: the catalog of versions, jobs, the cost ledger
  vocabulary         names, cards, specs, datasets, keys, metrics, routes, prices, events
  ports              every port (ObjectStore, Registry, Compute, EventPublisher, ContainerTier)
  adapters/aws, adapters/local   the ports' adapters; only adapters/aws imports boto3

Nothing here imports torch, and nothing imports dropflow_dev (the CLI and the local runtime).
"""

__version__ = "0.1.0"
