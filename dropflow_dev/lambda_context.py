"""A Lambda context object for calling handlers outside Lambda (local runtime, invoke, tests).

It carries what powertools and the handlers read: names, memory, ARN, request id and the
remaining time, which counts down from the function's timeout like the real one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"


@dataclass
class LambdaContext:
    """The attributes of `awslambdaric`'s context that handler code uses."""

    function_name: str = "dropflow-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.invoked_function_arn:
            self.invoked_function_arn = (
                f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{self.function_name}"
            )
        if not self.log_group_name:
            self.log_group_name = f"/aws/lambda/{self.function_name}"
        if not self.log_stream_name:
            self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the (simulated) timeout; never negative."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))
