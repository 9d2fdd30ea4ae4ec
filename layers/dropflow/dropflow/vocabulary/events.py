"""Domain events: what promotion tells the rest of the account ("Model Promoted"/"Rejected").

The names and the source every publisher uses; the EventPublisher port is in dropflow.ports,
the EventBridge adapter in dropflow.adapters.aws.eventbridge_events (the only place boto3 is
imported), the local ones (a JSON-lines file, or nowhere) in dropflow.adapters.local.event_log.
"""

SOURCE = "dropflow"
PROMOTED = "Model Promoted"
REJECTED = "Model Rejected"
