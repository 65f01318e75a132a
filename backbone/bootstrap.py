"""`backbone bootstrap --bucket NAME`: a self-managed Pulumi state backend on S3, with boto3.

What it makes (or checks, and puts right, when it is already there):

- a KMS key (symmetric, rotation on) with an alias: Pulumi's secrets provider
  (`awskms://alias/...`) and the bucket's default encryption;
- the bucket: versioning on (every state file's history is kept), default encryption SSE-KMS
  with that key (S3 Bucket Key on, fewer KMS calls), all four public access block settings, and a
  bucket policy refusing any request not made over TLS (aws:SecureTransport false).

Both carry the tags `managed-by: backbone-bootstrap` and `backbone:purpose: pulumi-state`: that is
how a later run knows they are the kit's. A bucket or key without them is refused unless
`adopt` is set. Nothing is ever deleted: existing bucket tags and policy statements are kept,
and a setting is only ever added or tightened. A second run changes nothing and says so.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions as bex

from backbone.awsapi import Aws, AwsError, error_code, explain

KIT_TAGS = {"managed-by": "backbone-bootstrap", "backbone:purpose": "pulumi-state"}
OWNER_TAG = "managed-by"
TLS_SID = "DenyInsecureTransport"


class BadInput(Exception):
    """A bucket name or alias that cannot be used: exit status 2."""


class Refused(Exception):
    """A bucket or key that is not the kit's (or cannot be used): nothing was changed."""


# ----------------------------------------------------------------------------- input rules

_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]+$")


def check_bucket_name(name: str) -> str:
    """S3's naming rules for general purpose buckets (Amazon S3 User Guide, "General purpose
    bucket naming rules"); BadInput naming the rule that is broken."""
    rule = None
    if not 3 <= len(name) <= 63:
        rule = f"is {len(name)} characters long; a bucket name has 3 to 63"
    elif not re.fullmatch(r"[a-z0-9.-]+", name):
        rule = "may hold only lowercase letters, digits, dots (.) and hyphens (-)"
    elif not _BUCKET_CHARS.match(name):
        rule = "must begin and end with a letter or a digit"
    elif ".." in name:
        rule = "must not hold two adjacent dots"
    elif _is_ip(name):
        rule = "must not be formatted as an IP address"
    elif name.startswith(_RESERVED_PREFIXES):
        rule = f"must not start with {', '.join(_RESERVED_PREFIXES)} (reserved by S3)"
    elif name.endswith(_RESERVED_SUFFIXES):
        rule = f"must not end with {', '.join(_RESERVED_SUFFIXES)} (reserved by S3)"
    if rule:
        raise BadInput(f"--bucket {name!r} {rule}")
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def default_alias(bucket: str) -> str:
    return f"alias/backbone-state-{bucket.replace('.', '-')}"


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or len(alias) > 256:
        raise BadInput(
            f"--key-alias {alias!r} is not a KMS alias: 'alias/' then letters, digits, '/', '_' "
            "or '-' (at most 256 characters)"
        )
    if alias.startswith("alias/aws/"):
        raise BadInput(f"--key-alias {alias!r}: alias/aws/ names are reserved for AWS managed keys")
    return alias


# ----------------------------------------------------------------------------- the run


@dataclass
class Step:
    what: str
    changed: bool
    detail: str


@dataclass
class Result:
    bucket: str
    region: str
    alias: str
    key_arn: str
    profile: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    def login_line(self) -> str:
        query = f"region={self.region}&awssdk=v2"
        if self.profile:
            query += f"&profile={self.profile}"
        return f"pulumi login 's3://{self.bucket}?{query}'"

    def stack_init_line(self, stack: str) -> str:
        return (
            f"pulumi stack init {stack} "
            f"--secrets-provider='awskms://{self.alias}?region={self.region}'"
        )


class Bootstrap:
    def __init__(self, aws: Aws, bucket: str, alias: str, *, adopt: bool) -> None:
        self.aws = aws
        self.s3 = aws.client("s3")
        self.kms = aws.client("kms")
        self.bucket = bucket
        self.alias = alias
        self.adopt = adopt
        self.region = aws.region
        self.partition = aws.session.get_partition_for_region(aws.region)
        self.steps: list[Step] = []

    def _call(self, client: Any, operation: str, **kwargs: Any) -> Any:
        return self._try(client, operation, (), **kwargs)

    def _try(self, client: Any, operation: str, absent: tuple[str, ...], **kwargs: Any) -> Any:
        """The call's answer, or None when AWS says the thing is absent (one of `absent`);
        any other failure is an AwsError of one line."""
        try:
            return getattr(client, operation)(**kwargs)
        except (bex.BotoCoreError, bex.ClientError) as exc:
            if absent and error_code(exc) in absent:
                return None
            service = client.meta.service_model.service_name
            name = "".join(p.capitalize() for p in operation.split("_"))
            raise explain(exc, f"{service} {name}") from None

    def step(self, what: str, changed: bool, detail: str) -> None:
        self.steps.append(Step(what, changed, detail))

    # -- look before touching anything ---------------------------------------------------------

    def inspect_bucket(self) -> dict[str, str] | None:
        """The bucket's tags when it exists (and is ours to read); None when it does not."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except bex.ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise Refused(
                    f"the bucket {self.bucket} already exists and this identity may not use it "
                    "(another account owns it, or access is denied): choose another name"
                ) from None
            if code in ("301", "PermanentRedirect"):
                where = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                actual = where.get("x-amz-bucket-region", "another region")
                raise Refused(
                    f"the bucket {self.bucket} is in {actual}, not {self.region}: pass "
                    f"--region {actual}"
                ) from None
            raise explain(exc, "s3 HeadBucket") from None
        except bex.BotoCoreError as exc:
            raise explain(exc, "s3 HeadBucket") from None
        location = self._call(self.s3, "get_bucket_location", Bucket=self.bucket)
        actual = location.get("LocationConstraint") or "us-east-1"
        actual = "eu-west-1" if actual == "EU" else actual
        if actual != self.region:
            raise Refused(
                f"the bucket {self.bucket} is in {actual}, not {self.region}: pass --region "
                f"{actual}"
            )
        tagging = self._try(self.s3, "get_bucket_tagging", ("NoSuchTagSet",), Bucket=self.bucket)
        return {t["Key"]: t["Value"] for t in (tagging or {}).get("TagSet", [])}

    def inspect_key(self) -> tuple[dict[str, Any], dict[str, str]] | None:
        """(key metadata, tags) of the key the alias names, or None when there is no alias."""
        found = self._try(self.kms, "describe_key", ("NotFoundException",), KeyId=self.alias)
        if found is None:
            return None
        meta = found["KeyMetadata"]
        if meta.get("KeyManager") == "AWS":
            raise Refused(f"{self.alias} names an AWS managed key; pass another --key-alias")
        state = meta.get("KeyState")
        if state != "Enabled":
            hint = {
                "PendingDeletion": "cancel its deletion (`aws kms cancel-key-deletion`, then "
                "`aws kms enable-key`) or pass another --key-alias",
                "Disabled": "enable it (`aws kms enable-key`) or pass another --key-alias",
            }.get(str(state), "pass another --key-alias")
            raise Refused(f"the key {self.alias} names is {state}: {hint}")
        if (
            meta.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT"
            or meta.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT"
        ):
            raise Refused(
                f"the key {self.alias} names is not a symmetric encryption key; pass another "
                "--key-alias"
            )
        listed = self._call(self.kms, "list_resource_tags", KeyId=meta["KeyId"])
        tags = {t["TagKey"]: t["TagValue"] for t in listed.get("Tags", [])}
        return meta, tags

    # -- then make it so -----------------------------------------------------------------------

    def run(self) -> Result:
        bucket_tags = self.inspect_bucket()
        key = self.inspect_key()
        foreign = []
        if bucket_tags is not None and bucket_tags.get(OWNER_TAG) != KIT_TAGS[OWNER_TAG]:
            foreign.append(f"the bucket {self.bucket}")
        if key is not None and key[1].get(OWNER_TAG) != KIT_TAGS[OWNER_TAG]:
            foreign.append(f"the key {self.alias}")
        if foreign and not self.adopt:
            raise Refused(
                f"{' and '.join(foreign)} already exist{'s' if len(foreign) == 1 else ''} and "
                f"{'was' if len(foreign) == 1 else 'were'} not created by backbone bootstrap "
                f"(no {OWNER_TAG}={KIT_TAGS[OWNER_TAG]} tag). Nothing was changed. Pass --adopt "
                "to take over and harden it (nothing is deleted), or choose another "
                "--bucket / --key-alias"
            )
        key_arn = self.ensure_key(key)
        self.ensure_bucket(bucket_tags, key_arn)
        return Result(self.bucket, self.region, self.alias, key_arn, self.aws.profile, self.steps)

    def ensure_key(self, key: tuple[dict[str, Any], dict[str, str]] | None) -> str:
        if key is None:
            created = self._call(
                self.kms,
                "create_key",
                Description=f"backbone: Pulumi state and secrets in s3://{self.bucket}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                Tags=[{"TagKey": k, "TagValue": v} for k, v in KIT_TAGS.items()],
            )["KeyMetadata"]
            self._call(self.kms, "create_alias", AliasName=self.alias, TargetKeyId=created["KeyId"])
            self.step("KMS key", True, f"created {created['Arn']} as {self.alias}")
            meta = created
        else:
            meta, tags = key
            missing = {k: v for k, v in KIT_TAGS.items() if tags.get(k) != v}
            if missing:
                self._call(
                    self.kms,
                    "tag_resource",
                    KeyId=meta["KeyId"],
                    Tags=[{"TagKey": k, "TagValue": v} for k, v in missing.items()],
                )
                self.step("KMS key", True, f"adopted {meta['Arn']} ({self.alias}): tagged")
            else:
                self.step("KMS key", False, f"{meta['Arn']} ({self.alias})")
        rotation = self._call(self.kms, "get_key_rotation_status", KeyId=meta["KeyId"])
        if rotation.get("KeyRotationEnabled"):
            self.step("key rotation", False, "on")
        else:
            self._call(self.kms, "enable_key_rotation", KeyId=meta["KeyId"])
            self.step("key rotation", True, "switched on (yearly)")
        return str(meta["Arn"])

    def ensure_bucket(self, tags: dict[str, str] | None, key_arn: str) -> None:
        """The bucket (created when `tags` is None: it does not exist yet), then each of its
        settings checked and put right in turn."""
        if tags is None:
            self.create_bucket()
            tags = {}
        else:
            self.step("bucket", False, f"s3://{self.bucket} in {self.region}")
        self.ensure_bucket_tags(tags)
        self.ensure_versioning()
        self.ensure_encryption(key_arn)
        self.ensure_public_access_block()
        self.ensure_tls_policy()

    def create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._call(self.s3, "create_bucket", **kwargs)
        self.step("bucket", True, f"created s3://{self.bucket} in {self.region}")

    def ensure_bucket_tags(self, tags: dict[str, str]) -> None:
        missing = {k: v for k, v in KIT_TAGS.items() if tags.get(k) != v}
        if not missing:
            self.step("bucket tags", False, ", ".join(f"{k}={v}" for k, v in KIT_TAGS.items()))
            return
        merged = {**tags, **KIT_TAGS}  # every tag already there is kept
        self._call(
            self.s3,
            "put_bucket_tagging",
            Bucket=self.bucket,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in merged.items()]},
        )
        self.step("bucket tags", True, ", ".join(f"{k}={v}" for k, v in missing.items()))

    def ensure_versioning(self) -> None:
        versioning = self._call(self.s3, "get_bucket_versioning", Bucket=self.bucket)
        if versioning.get("Status") == "Enabled":
            self.step("versioning", False, "Enabled")
            return
        self._call(
            self.s3,
            "put_bucket_versioning",
            Bucket=self.bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )
        self.step("versioning", True, "switched on")

    def ensure_encryption(self, key_arn: str) -> None:
        """Default encryption SSE-KMS with the key, S3 Bucket Key on."""
        encryption = self._try(
            self.s3,
            "get_bucket_encryption",
            ("ServerSideEncryptionConfigurationNotFoundError",),
            Bucket=self.bucket,
        )
        rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
        if (
            default.get("SSEAlgorithm") == "aws:kms"
            and default.get("KMSMasterKeyID") in (key_arn, key_arn.rsplit("/", 1)[-1])
            and rules[0].get("BucketKeyEnabled")
        ):
            self.step("default encryption", False, f"SSE-KMS with {self.alias}")
            return
        self._call(
            self.s3,
            "put_bucket_encryption",
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        was = default.get("SSEAlgorithm") or "none"
        self.step("default encryption", True, f"SSE-KMS with {self.alias} (was {was})")

    def ensure_public_access_block(self) -> None:
        block = self._try(
            self.s3,
            "get_public_access_block",
            ("NoSuchPublicAccessBlockConfiguration",),
            Bucket=self.bucket,
        )
        settings = (block or {}).get("PublicAccessBlockConfiguration", {})
        wanted = {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        if all(settings.get(k) is True for k in wanted):
            self.step("public access block", False, "all four on")
            return
        self._call(
            self.s3,
            "put_public_access_block",
            Bucket=self.bucket,
            PublicAccessBlockConfiguration=wanted,
        )
        self.step("public access block", True, "all four switched on")

    def tls_statement(self) -> dict[str, Any]:
        arn = f"arn:{self.partition}:s3:::{self.bucket}"
        return {
            "Sid": TLS_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }

    def ensure_tls_policy(self) -> None:
        found = self._try(self.s3, "get_bucket_policy", ("NoSuchBucketPolicy",), Bucket=self.bucket)
        policy: dict[str, Any] = {"Version": "2012-10-17", "Statement": []}
        if found is not None:
            try:
                policy = json.loads(found["Policy"])
            except (KeyError, ValueError):
                raise AwsError(f"the bucket policy of {self.bucket} is not JSON") from None
        statements = policy.get("Statement", [])
        if isinstance(statements, dict):
            statements = [statements]
        wanted = self.tls_statement()
        kept = [s for s in statements if s.get("Sid") != TLS_SID]
        ours = [s for s in statements if s.get("Sid") == TLS_SID]
        if ours and all(_same_statement(s, wanted) for s in ours) and len(ours) == 1:
            self.step("bucket policy", False, "refuses requests without TLS")
            return
        policy["Statement"] = [*kept, wanted]
        policy.setdefault("Version", "2012-10-17")
        self._call(self.s3, "put_bucket_policy", Bucket=self.bucket, Policy=json.dumps(policy))
        extra = f", {len(kept)} other statement(s) kept" if kept else ""
        self.step("bucket policy", True, f"refuses requests without TLS{extra}")


def _same_statement(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def norm(s: dict[str, Any]) -> str:
        s = dict(s)
        for key in ("Action", "Resource"):
            if isinstance(s.get(key), list):
                s[key] = sorted(s[key])
            elif isinstance(s.get(key), str):
                s[key] = [s[key]]
        if s.get("Principal") == {"AWS": "*"}:
            s["Principal"] = "*"
        return json.dumps(s, sort_keys=True)

    return norm(a) == norm(b)


def bootstrap(aws: Aws, bucket: str, alias: str, *, adopt: bool = False) -> Result:
    return Bootstrap(aws, bucket, alias, adopt=adopt).run()


def render(result: Result, stack: str, console: Any) -> None:
    from rich.text import Text

    console.print(
        Text(
            f"Pulumi state backend s3://{result.bucket} ({result.region}), key {result.alias}",
            style="bold",
        )
    )
    for s in result.steps:
        mark = Text("changed  ", style="yellow") if s.changed else Text("ok       ", style="green")
        console.print(Text.assemble("  ", mark, f"{s.what}: {s.detail}"))
    if result.changed:
        n = sum(1 for s in result.steps if s.changed)
        console.print(f"{n} change(s) made; nothing was deleted.", markup=False)
    else:
        console.print("no changes: everything was already in place.", markup=False)
    console.print("\nNext, from the project's folder:", markup=False)
    console.print(f"  {result.login_line()}", markup=False, soft_wrap=True)
    console.print(f"  {result.stack_init_line(stack)}", markup=False, soft_wrap=True)
