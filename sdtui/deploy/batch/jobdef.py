"""The job definition: the worker image's `batch` command with 1 GPU, 4 vCPUs and most of the
instance's memory, under the job role; retried on host failures (a spot reclaim) only, and
stopped after a per-attempt timeout. Registered again only when something in it changed."""

from __future__ import annotations

from sdtui.deploy.batch import names

GPU, VCPUS = 1, 4
# What ECS leaves for tasks on a 16 GiB xlarge is a little under 15.5 GiB; ask for less, or the
# job would wait for an instance that can never hold it.
MEMORY_MIB = 14_000
ATTEMPTS = 3
DEFAULT_ATTEMPT_S = 6 * 3600
RETRY_ON_HOST = [
    # "Host EC2 (instance i-...) terminated.": the instance went away (a spot reclaim)
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]


def definition_params(name: str, *, image: str, job_role_arn: str,
                      attempt_s: int = DEFAULT_ATTEMPT_S, memory_mib: int = MEMORY_MIB,
                      run: str | None = None) -> dict:
    """The RegisterJobDefinition request: the deployment's, or (`run`) that run's own."""
    return {
        "jobDefinitionName": names.job_definition(name) if run is None
        else names.run_job_definition(name, run),
        "type": "container",
        "platformCapabilities": ["EC2"],
        "containerProperties": {
            "image": image,
            # The image's entry point is `python3 -m sdtui.worker`; each run overrides this.
            "command": ["batch", "--help"],
            "jobRoleArn": job_role_arn,
            "resourceRequirements": [
                {"type": "GPU", "value": str(GPU)},
                {"type": "VCPU", "value": str(VCPUS)},
                {"type": "MEMORY", "value": str(memory_mib)},
            ],
        },
        "retryStrategy": {"attempts": ATTEMPTS, "evaluateOnExit": RETRY_ON_HOST},
        "timeout": {"attemptDurationSeconds": attempt_s},
        "propagateTags": True,
        "tags": names.tag_dict(name),
    }


def _same(active: dict, params: dict) -> bool:
    mine, theirs = params["containerProperties"], active.get("containerProperties", {})
    return (all(theirs.get(k) == v for k, v in mine.items() if k != "command")
            and _retry(active.get("retryStrategy")) == _retry(params["retryStrategy"])
            and active.get("timeout") == params["timeout"])


def _retry(strategy: dict | None) -> dict:
    """Batch takes the actions in any case (and may echo them lowercased)."""
    strategy = dict(strategy or {})
    strategy["evaluateOnExit"] = [{k: v.lower() if k == "action" else v for k, v in rule.items()}
                                  for rule in strategy.get("evaluateOnExit", [])]
    return strategy


def active_definitions(batch, name: str, definition: str | None = None) -> list[dict]:
    """Ours of that name (the deployment's by default), oldest first."""
    found = []
    for page in batch.get_paginator("describe_job_definitions").paginate(
            jobDefinitionName=definition or names.job_definition(name), status="ACTIVE"):
        found += [d for d in page["jobDefinitions"]
                  if d.get("tags", {}).get(names.TAG_KEY) == name]
    return sorted(found, key=lambda d: d["revision"])


def ensure(batch, name: str, params: dict) -> str:
    """The latest revision when it matches `params`, otherwise a new one (older revisions of
    ours are deregistered); returns its ARN."""
    active = active_definitions(batch, name)
    if active and _same(active[-1], params):
        return active[-1]["jobDefinitionArn"]
    arn = batch.register_job_definition(**params)["jobDefinitionArn"]
    for old in active:
        batch.deregister_job_definition(jobDefinition=old["jobDefinitionArn"])
    return arn


def register_run(batch, params: dict) -> str:
    """A run's own definition (its role is the run's); returns its ARN."""
    return batch.register_job_definition(**params)["jobDefinitionArn"]


def deregister_run(batch, name: str, run: str) -> list[str]:
    return _deregister(batch, active_definitions(batch, name, names.run_job_definition(name, run)))


def deregister_all(batch, name: str, run_ids: list[str] = ()) -> list[str]:
    """The deployment's definitions and those of the given runs."""
    found = active_definitions(batch, name)
    for run in run_ids:
        found += active_definitions(batch, name, names.run_job_definition(name, run))
    return _deregister(batch, found)


def _deregister(batch, definitions: list[dict]) -> list[str]:
    gone = []
    for definition in definitions:
        batch.deregister_job_definition(jobDefinition=definition["jobDefinitionArn"])
        gone.append(definition["jobDefinitionArn"])
    return gone
