"""boto3 for the day-two commands (`backbone verify`, `backbone bootstrap`): one session, one
retry policy, and AWS errors turned into one clear line each.

Credentials, region and endpoint come from boto3's standard configuration, so anything that works
for the AWS CLI works here: `--profile` (or AWS_PROFILE), AWS_REGION / AWS_DEFAULT_REGION or the
profile's region, SSO and assumed roles from ~/.aws/config, and AWS_ENDPOINT_URL (or a
per-service AWS_ENDPOINT_URL_<SERVICE>) to point both commands at an emulator such as moto.

Throttling is retried by botocore itself ("standard" retry mode: exponential backoff with jitter
on Throttling, ThrottlingException, RequestLimitExceeded, SlowDown and transient 5xx / connection
errors). What is still failing after the last attempt becomes an AwsError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions as bex
from botocore.config import Config

# "total_max_attempts" counts the first call: 5 attempts is 4 retries.
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20

THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
        "AuthorizationErrorException",
        "Forbidden",
        "403",
    }
)
BAD_CREDENTIALS = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "RequestExpired",
    }
)


class AwsError(Exception):
    """An AWS call that failed: `str()` is one line saying what, why and what to do.

    `setup` is true when the cause is the caller's configuration (no credentials, an unknown
    profile, no region): the commands exit 2 for those, as for any other bad input."""

    def __init__(self, message: str, *, code: str = "", setup: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.setup = setup


@dataclass
class Aws:
    """A boto3 session with the kit's retry policy; `client(service)` is cached per service."""

    session: boto3.Session
    region: str
    profile: str | None = None

    def __post_init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = Config(
                region_name=self.region,
                retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                user_agent_extra="backbone",
                # path-style works against AWS and every emulator; virtual hosts need DNS.
                s3={"addressing_style": "path"} if service == "s3" else None,
            )
            try:
                self._clients[service] = self.session.client(service, config=config)
            except bex.BotoCoreError as exc:
                raise explain(exc) from None
        return self._clients[service]


def connect(profile: str | None = None, region: str | None = None) -> Aws:
    """A session from the standard configuration; `region` (when given) wins over it.

    Raises AwsError(setup=True) for an unknown profile or when no region is configured."""
    try:
        session = boto3.Session(profile_name=profile or None)
    except bex.ProfileNotFound:
        raise AwsError(
            f"no AWS profile named {profile!r} in ~/.aws/config or ~/.aws/credentials "
            "(`aws configure list-profiles` lists them)",
            setup=True,
        ) from None
    chosen = region or session.region_name
    if not chosen:
        raise AwsError(
            "no AWS region: pass --region, set AWS_REGION, or give the profile a region "
            "(`aws configure set region us-east-1`)",
            setup=True,
        )
    return Aws(session=session, region=chosen, profile=profile)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, bex.ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return ""


def explain(exc: BaseException, doing: str = "") -> AwsError:
    """One line for a botocore failure. `doing` names the call, e.g. "s3 CreateBucket"."""
    where = f"{doing}: " if doing else ""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AwsError(
            "no AWS credentials found: run `aws configure` or `aws sso login`, pass --profile, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            setup=True,
        )
    if isinstance(
        exc, bex.TokenRetrievalError | bex.SSOTokenLoadError | bex.UnauthorizedSSOTokenError
    ):
        return AwsError(
            f"the AWS SSO session has expired or is missing: run `aws sso login` ({exc})",
            setup=True,
        )
    if isinstance(exc, bex.NoRegionError):
        return AwsError("no AWS region: pass --region or set AWS_REGION", setup=True)
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        return AwsError(
            f"{where}cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')} after "
            f"{MAX_ATTEMPTS} attempts (network, proxy, or AWS_ENDPOINT_URL?)",
            code="EndpointConnectionError",
        )
    if isinstance(exc, bex.ReadTimeoutError):
        return AwsError(
            f"{where}no answer from AWS within {READ_TIMEOUT} s, {MAX_ATTEMPTS} attempts",
            code="ReadTimeout",
        )
    if isinstance(exc, bex.ClientError):
        return _client_error(exc, where)
    if isinstance(exc, bex.BotoCoreError):
        return AwsError(f"{where}{exc}")
    return AwsError(f"{where}{type(exc).__name__}: {exc}")


def _client_error(exc: bex.ClientError, where: str) -> AwsError:
    """One line for an error AWS answered: throttling, access denied, bad credentials, other."""
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message") or "").strip()
    message = " ".join(message.split())
    if code in THROTTLING:
        return AwsError(
            f"{where}throttled by AWS ({code}) on each of {MAX_ATTEMPTS} attempts; "
            "wait a minute and run it again",
            code=code,
        )
    if code in ACCESS_DENIED:
        return AwsError(
            f"{where}access denied ({code}){': ' + message if message else ''}; the "
            "identity in use needs that permission (`aws sts get-caller-identity` shows who "
            "you are)",
            code=code,
        )
    if code in BAD_CREDENTIALS:
        return AwsError(
            f"{where}AWS refused the credentials ({code}): they are wrong or expired; "
            "refresh them (`aws sso login`, `aws configure`)",
            code=code,
            setup=True,
        )
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    detail = message or (f"HTTP {status}" if status else "no message")
    return AwsError(f"{where}{code or 'error'}: {detail}", code=code)
