"""The boto3 session, from the standard credential chain, and who it acts as.

Endpoint overrides (moto in tests, private endpoints for users) come from boto3's own
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> support; nothing here plumbs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

from sdtui.deploy.aws.naming import error_code, error_message
from sdtui.errors import BadInput, DeploymentError, NoCredentials

# botocore's "standard" mode retries throttling and transient errors only, with backoff.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})
# RunInstances: a capacity shortage comes back as a 500, which standard mode would retry 7
# times with backoff in the same zone; fail at once instead and try the next zone (as
# SkyPilot's launcher does).
LAUNCH_CONFIG = Config(retries={"mode": "standard", "max_attempts": 0})
# Prices are informative: ask once, briefly, and fall back to the built-in table.
PRICING_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2},
                        connect_timeout=5, read_timeout=10)

CREDENTIAL_SOURCES = (
    "env vars AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials and ~/.aws/config "
    "(profile {profile}), SSO, and the instance metadata service"
)


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str
    user_id: str


def make_session(profile: str | None, region: str) -> boto3.Session:
    try:
        return boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise BadInput(
            f"AWS profile {profile!r} is not in ~/.aws/config or ~/.aws/credentials",
            fix=f"run `aws configure --profile {profile}` or pass an existing --profile",
        ) from None


def client(session: boto3.Session, service: str, region: str | None = None):  # noqa: ANN201
    return session.client(service, region_name=region, config=CLIENT_CONFIG)


class SessionClients:
    """For the classes that hold a deployment's `settings` (profile, region): one boto3
    session, made on first use (a missing profile is refused then, not at construction), and
    one client per service."""

    settings: Any

    @cached_property
    def session(self) -> boto3.Session:
        return make_session(self.settings.profile, str(self.settings.region))

    @cached_property
    def _clients(self) -> dict[str, Any]:
        return {}

    def client(self, service: str):  # noqa: ANN201
        if service not in self._clients:
            self._clients[service] = client(self.session, service)
        return self._clients[service]


def launch_client(session: boto3.Session, region: str | None = None):  # noqa: ANN201
    """An EC2 client for RunInstances only: no retries (see LAUNCH_CONFIG)."""
    return session.client("ec2", region_name=region, config=LAUNCH_CONFIG)


def pricing_client(session: boto3.Session):  # noqa: ANN201
    """The Pricing API answers from us-east-1 only, for every region."""
    return session.client("pricing", region_name="us-east-1", config=PRICING_CONFIG)


def _login_fix(profile: str | None) -> str:
    named = f" --profile {profile}" if profile else ""
    return f"run `aws configure{named}`, or `aws sso login{named}` for SSO, then retry"


def identity(session: boto3.Session) -> Identity:
    """STS GetCallerIdentity; a clear error when there are no usable credentials."""
    profile = session.profile_name
    where = CREDENTIAL_SOURCES.format(profile=profile)
    try:
        credentials = session.get_credentials()
    except (SSOError, TokenRetrievalError, UnauthorizedSSOTokenError) as exc:
        raise NoCredentials(f"the SSO login has expired ({exc})",
                            fix=_login_fix(profile)) from None
    if credentials is None:
        raise NoCredentials(f"no AWS credentials found (looked in {where})",
                            fix=_login_fix(profile))
    try:
        reply = client(session, "sts").get_caller_identity()
    except NoCredentialsError:
        raise NoCredentials(
            f"no AWS credentials found (looked in {where})", fix=_login_fix(profile)
        ) from None
    except (SSOError, TokenRetrievalError, UnauthorizedSSOTokenError) as exc:
        raise NoCredentials(f"the SSO login has expired ({exc})",
                            fix=_login_fix(profile)) from None
    except ClientError as exc:
        code = error_code(exc)
        if code in {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                    "ExpiredTokenException", "AccessDenied"}:
            raise NoCredentials(
                f"AWS rejected the credentials ({code}: {error_message(exc)})",
                fix=_login_fix(profile),
            ) from None
        raise DeploymentError(f"sts get-caller-identity failed: {exc}") from exc
    except BotoCoreError as exc:
        raise DeploymentError(
            f"could not reach AWS STS: {exc}", fix="check the network and --region"
        ) from exc
    return Identity(account=reply["Account"], arn=reply["Arn"], user_id=reply["UserId"])
