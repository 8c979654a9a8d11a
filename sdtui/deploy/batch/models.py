"""Which bucket keys a run's shards copy: the model (with its sidecars) and the extra files.

`--model` takes local files, which are uploaded first exactly as Option A uploads them, keys
already in the bucket (what Option A left there, e.g. `sd-v1-4.ckpt`, or a split set's folder or
transformer file, resolved by `bucket_sets`), or a model to fetch, whose keys under `models/` are
known once it is resolved (the `fetch` step puts them there). Everything is looked up before
anything is created, so a model missing from the bucket is refused up front.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import MODELS_PREFIX, error_code
from sdtui.deploy.batch.bucket_sets import bucket_set, listed
from sdtui.errors import BadInput
from sdtui.fetch.plan import Resolved
from sdtui.fetch.to_bucket import key_of
from sdtui.modelfiles import (
    CONFIG_DIR_SUFFIX,
    DIFFUSERS_INDEX,
    YAML_SUFFIX,
    check_models,
    deployment_files,
)
from sdtui.userfiles import expand

MODEL_SUFFIXES = (".ckpt", ".safetensors")


@dataclass(frozen=True)
class ModelFiles:
    primary: str  # the model's key at the bucket root: a checkpoint file or a folder name
    keys: list[str]  # every key a shard copies into scratch
    total_bytes: int
    local: list[Path] = field(default_factory=list)  # uploaded first; empty when in the bucket


def is_local(arg: str) -> bool:
    """A path on this machine (it exists, or is written like one) rather than a bucket key."""
    return arg.startswith(("/", ".", "~")) or Path(arg).exists()


def plan(s3, bucket: str, bucket_exists: bool, models: list[str]) -> ModelFiles:
    local = [is_local(m) for m in models]
    if all(local):
        paths = [expand(m, "model file") for m in models]
        check_models(paths)
        files = deployment_files(paths)
        return ModelFiles(files[0][1].split("/")[0], [key for _path, key in files],
                          sum(path.stat().st_size for path, _key in files), paths)
    if any(local):
        raise BadInput("--model mixes files on this machine with keys in the bucket",
                       fix="pass all of them as local files (uploaded first) or all as keys")
    keys: list[str] = []
    total = 0
    for number, model in enumerate(models):
        found = _bucket_files(s3, bucket, model, bucket_exists, primary=number == 0)
        keys += [k for k, _size in found if k not in keys]
        total += sum(size for _key, size in found)
    return ModelFiles(models[0].rstrip("/"), keys, total)


def fetched(sets: list[Resolved], models: list[str]) -> ModelFiles:
    """A model the `fetch` step puts in the bucket (the LoRAs fetched with it in its `loras/`
    folder): its keys, as Option A's fetch lays them."""
    if models[1:]:
        raise BadInput(f"{models[1]} travels beside a model to fetch, which the scale-out does "
                       "not upload yet",
                       fix="put the extra file in the bucket yourself, or give the model as a "
                       "file or a key")
    model = sets[0]
    return ModelFiles(f"{MODELS_PREFIX}{model.root}/{model.model}",
                      [key_of(MODELS_PREFIX, r, f) for r in sets for f in r.files],
                      sum(r.total for r in sets))


def _bucket_files(s3, bucket: str, key: str, exists: bool, *,
                  primary: bool) -> list[tuple[str, int]]:
    key = key.rstrip("/")
    if not key or key.startswith("/") or ".." in PurePosixPath(key).parts:
        raise BadInput(f"--model {key!r} is not a bucket key", fix="pass a key like sd-v1-4.ckpt")
    missing = BadInput(
        f"model {key} is not in s3://{bucket}",
        fix="pass the local file with --model to upload it, or check the key with "
        f"`aws s3 ls s3://{bucket}/`")
    if not exists:
        raise missing
    size = _size(s3, bucket, key)
    folder = [] if size is not None else _listed(s3, bucket, key + "/")
    if size is None and not folder:
        raise missing
    diffusers = f"{key}/{DIFFUSERS_INDEX}" in {k for k, _ in folder}
    if primary and not diffusers:
        found_set = bucket_set(s3, bucket, key, size)  # keyed as Option A uploads a set
        if found_set is not None:
            return found_set
    if size is not None:
        if primary and not key.endswith(MODEL_SUFFIXES):
            raise BadInput(f"model {key} is not a .ckpt, .safetensors, diffusers folder or "
                           "model set", fix="pass the model first, then the extra files")
        found = [(key, size)]
        if primary:  # its sidecars, found as the worker looks for them
            stem = key[: key.rfind(".")]
            found += _listed(s3, bucket, stem + CONFIG_DIR_SUFFIX + "/")
            yaml = _size(s3, bucket, stem + YAML_SUFFIX)
            if yaml is not None:
                found.append((stem + YAML_SUFFIX, yaml))
        return found
    if primary and not diffusers:
        raise BadInput(f"s3://{bucket}/{key}/ is neither a diffusers model (no "
                       f"{DIFFUSERS_INDEX}) nor a model set (no transformer)",
                       fix="pass a .ckpt, .safetensors or diffusers folder key, or a FLUX.1, "
                       "SD 3.5 or FLUX.2 Klein set's folder or transformer file key")
    return folder


def _size(s3, bucket: str, key: str) -> int | None:
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def _listed(s3, bucket: str, prefix: str) -> list[tuple[str, int]]:
    return listed(s3, bucket, prefix)[0]
