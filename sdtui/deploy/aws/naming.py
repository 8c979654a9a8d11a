"""Names and tags of everything a deployment creates, derived from the deployment name alone,
so that a crashed run, `status` and teardown all find the same resources."""

from __future__ import annotations

from botocore.exceptions import ClientError

from sdtui.errors import BadInput

TAG_KEY = "sdtui:deployment"


def tags(name: str) -> list[dict[str, str]]:
    return [{"Key": TAG_KEY, "Value": name}]


def tag_dict(name: str) -> dict[str, str]:
    """Batch and ECR take tags as a map (EC2 and IAM take a list: tags)."""
    return {TAG_KEY: name}


def check_ours(kind: str, resource: str, found_tags: dict[str, str] | None, name: str) -> None:
    """Refuse to touch a resource of our name that carries no tag of ours."""
    if (found_tags or {}).get(TAG_KEY) != name:
        raise BadInput(f"{kind} {resource} exists and is not sdtui's (no {TAG_KEY}={name} tag)",
                       fix="pass another --name, or remove that resource yourself")


def tag_filter(name: str) -> dict:
    return {"Name": f"tag:{TAG_KEY}", "Values": [name]}


def role_name(name: str) -> str:
    return f"sdtui-{name}-role"


def instance_profile_name(name: str) -> str:
    return f"sdtui-{name}"


def key_pair_name(name: str) -> str:
    return f"sdtui-{name}"


def security_group_name(name: str) -> str:
    return f"sdtui-{name}"


def repository_name(name: str) -> str:
    """The deployment's ECR repository (the worker image), for Option A and the scale-out."""
    return f"sdtui-{name}"


POLICY_NAME = "sdtui-read-model-bucket"
# Put on the instance role only while the instance fetches models into the bucket.
FETCH_POLICY_NAME = "sdtui-fetch-models"
MODELS_PREFIX = "models/"  # where fetched models land in the bucket


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)
