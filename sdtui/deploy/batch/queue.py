"""The job queue in front of the compute environment."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdtui.deploy.batch import names
from sdtui.deploy.batch.wait import Status, disable_then_delete, wait_for


def queue_params(name: str, compute_environment_arn: str) -> dict:
    return {"jobQueueName": names.job_queue(name), "state": "ENABLED", "priority": 1,
            "computeEnvironmentOrder": [{"order": 1,
                                         "computeEnvironment": compute_environment_arn}],
            "tags": names.tag_dict(name)}


def describe(batch, name: str) -> dict | None:
    found = batch.describe_job_queues(jobQueues=[names.job_queue(name)])["jobQueues"]
    if not found:
        return None
    names.check_ours("job queue", found[0]["jobQueueName"], found[0].get("tags"), name)
    return found[0]


def ensure(batch, name: str, params: dict, *,
           sleep: Callable[[float], None] = time.sleep) -> str:
    state = Status(describe, batch, name)
    found = describe(batch, name)
    if found is None:
        arn = batch.create_job_queue(**params)["jobQueueArn"]
    else:
        arn = found["jobQueueArn"]
        if found.get("state") != "ENABLED":
            wait_for(state, {"VALID"}, "the job queue", sleep=sleep)
            batch.update_job_queue(jobQueue=arn, state="ENABLED")
    wait_for(state, {"VALID"}, "the job queue", sleep=sleep)
    return arn


def delete(batch, name: str, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Disable, delete, and wait until it is gone (its unfinished jobs are terminated)."""
    found = describe(batch, name)
    if found is None:
        return False
    arn = found["jobQueueArn"]
    disable_then_delete(
        Status(describe, batch, name), found, "the job queue",
        disable=lambda: batch.update_job_queue(jobQueue=arn, state="DISABLED"),
        delete=lambda: batch.delete_job_queue(jobQueue=arn), sleep=sleep)
    return True
