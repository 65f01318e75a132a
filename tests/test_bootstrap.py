"""`backbone bootstrap --bucket NAME`: the state backend made in moto's AWS emulation (server
mode, real HTTP on loopback), read back property by property with boto3; a second run is a
no-op; a foreign bucket or key is refused; nothing is ever deleted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.aws_harness import REGION, aws, backbone, client, moto_server, refusing_aws

pytestmark = pytest.mark.realpart
_ = (aws, moto_server, refusing_aws)  # fixtures

BUCKET = "acme-pulumi-state"
ALIAS = "alias/backbone-state-acme-pulumi-state"
KIT_TAGS = {"managed-by": "backbone-bootstrap", "backbone:purpose": "pulumi-state"}


def bootstrap(endpoint: str, *args: str, **kw: Any) -> Any:
    return backbone("bootstrap", *args, endpoint=endpoint, **kw)


def key_of(alias: str = ALIAS, region: str = REGION) -> dict[str, Any]:
    return dict(client("kms", region).describe_key(KeyId=alias)["KeyMetadata"])


def bucket_policy(bucket: str = BUCKET, region: str = REGION) -> dict[str, Any]:
    return dict(json.loads(client("s3", region).get_bucket_policy(Bucket=bucket)["Policy"]))


def test_creates_every_property(aws: str) -> None:
    run = bootstrap(aws, "--bucket", BUCKET)
    assert run.code == 0, run.stdout + run.stderr
    s3, kms = client("s3"), client("kms")

    key = key_of()
    assert key["KeyState"] == "Enabled"
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT" and key["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    key_tags = {
        t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
    }
    assert key_tags == KIT_TAGS

    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": key["Arn"],
    }
    assert rule["BucketKeyEnabled"] is True
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket_policy()["Statement"] == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags == KIT_TAGS

    # the exact lines to run next
    assert f"pulumi login 's3://{BUCKET}?region=us-east-1&awssdk=v2'" in run.stdout.splitlines()[-2]
    assert run.stdout.splitlines()[-1].strip() == (
        f"pulumi stack init dev --secrets-provider='awskms://{ALIAS}?region=us-east-1'"
    )
    assert "change(s) made; nothing was deleted." in run.stdout


def test_second_run_changes_nothing(aws: str) -> None:
    assert bootstrap(aws, "--bucket", BUCKET).code == 0
    s3 = client("s3")
    before = (
        s3.get_bucket_policy(Bucket=BUCKET)["Policy"],
        s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
        key_of()["Arn"],
        len(client("kms").list_keys()["Keys"]),
    )
    again = bootstrap(aws, "--bucket", BUCKET)
    assert again.code == 0, again.stderr
    assert "no changes: everything was already in place." in again.stdout
    assert "changed" not in again.stdout
    after = (
        s3.get_bucket_policy(Bucket=BUCKET)["Policy"],
        s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
        key_of()["Arn"],
        len(client("kms").list_keys()["Keys"]),
    )
    assert after == before  # no second key, nothing rewritten


def test_puts_back_a_setting_someone_switched_off(aws: str) -> None:
    assert bootstrap(aws, "--bucket", BUCKET).code == 0
    s3 = client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_public_access_block(Bucket=BUCKET)
    run = bootstrap(aws, "--bucket", BUCKET)
    assert run.code == 0
    assert "versioning: switched on" in run.stdout
    assert "public access block: all four switched on" in run.stdout
    assert "2 change(s) made" in run.stdout
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"


def test_foreign_bucket_is_refused_and_left_alone(aws: str) -> None:
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "data"}]})
    run = bootstrap(aws, "--bucket", BUCKET)
    assert run.code == 1
    assert run.stderr.strip() == (
        f"error: the bucket {BUCKET} already exists and was not created by backbone bootstrap "
        "(no managed-by=backbone-bootstrap tag). Nothing was changed. Pass --adopt to take over "
        "and harden it (nothing is deleted), or choose another --bucket / --key-alias"
    )
    # nothing was changed: no key, no versioning, the tags as they were
    assert client("kms").list_keys()["Keys"] == []
    assert "Status" not in s3.get_bucket_versioning(Bucket=BUCKET)
    assert s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "team", "Value": "data"}]


def test_adopt_hardens_and_keeps_what_was_there(aws: str) -> None:
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "data"}]})
    theirs = {
        "Sid": "ReadForAuditors",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
    }
    s3.put_bucket_policy(
        Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]})
    )
    s3.put_object(Bucket=BUCKET, Key="existing/state.json", Body=b"{}")
    assert s3.get_object(Bucket=BUCKET, Key="existing/state.json")["Body"].read() == b"{}"
    run = bootstrap(aws, "--bucket", BUCKET, "--adopt")
    assert run.code == 0, run.stderr
    assert "1 other statement(s) kept" in run.stdout
    statements = bucket_policy()["Statement"]
    assert [s["Sid"] for s in statements] == ["ReadForAuditors", "DenyInsecureTransport"]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags == {"team": "data", **KIT_TAGS}
    # the object is still there, and a read without TLS (this client talks plain HTTP to the
    # emulator, which evaluates the bucket policy on object reads) is now refused
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [o["Key"] for o in listed] == ["existing/state.json"]
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=BUCKET, Key="existing/state.json")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # adopted: the next run needs no --adopt and changes nothing
    again = bootstrap(aws, "--bucket", BUCKET)
    assert again.code == 0 and "no changes" in again.stdout


def test_foreign_key_alias_is_refused(aws: str) -> None:
    kms = client("kms")
    theirs = kms.create_key(Description="someone else's")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/shared", TargetKeyId=theirs)
    run = bootstrap(aws, "--bucket", BUCKET, "--key-alias", "alias/shared")
    assert run.code == 1
    assert "the key alias/shared already exists and was not created by backbone bootstrap" in (
        run.stderr
    )
    assert client("s3").list_buckets()["Buckets"] == []  # refused before anything was made


def test_key_pending_deletion_is_refused(aws: str) -> None:
    assert bootstrap(aws, "--bucket", BUCKET).code == 0
    client("kms").schedule_key_deletion(KeyId=key_of()["KeyId"], PendingWindowInDays=7)
    run = bootstrap(aws, "--bucket", BUCKET)
    assert run.code == 1
    assert f"the key {ALIAS} names is PendingDeletion: cancel its deletion" in run.stderr


def test_other_region_profile_and_stack_in_the_lines(aws: str) -> None:
    run = bootstrap(aws, "--bucket", "acme-state-eu", "--region", "eu-west-1", "--stack", "prod")
    assert run.code == 0, run.stderr
    s3 = client("s3", "eu-west-1")
    assert s3.get_bucket_location(Bucket="acme-state-eu")["LocationConstraint"] == "eu-west-1"
    assert key_of("alias/backbone-state-acme-state-eu", "eu-west-1")["Arn"].startswith(
        "arn:aws:kms:eu-west-1:"
    )
    lines = [line.strip() for line in run.stdout.splitlines()]
    assert "pulumi login 's3://acme-state-eu?region=eu-west-1&awssdk=v2'" in lines
    assert (
        "pulumi stack init prod "
        "--secrets-provider='awskms://alias/backbone-state-acme-state-eu?region=eu-west-1'"
    ) in lines
    # the same bucket asked for in another region: refused, not made twice
    wrong = bootstrap(aws, "--bucket", "acme-state-eu", "--region", "us-east-1")
    assert wrong.code == 1
    assert "is in eu-west-1, not us-east-1: pass --region eu-west-1" in wrong.stderr


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "is 2 characters long; a bucket name has 3 to 63"),
        ("a" * 64, "is 64 characters long"),
        ("Acme-State", "may hold only lowercase letters, digits, dots (.) and hyphens (-)"),
        ("acme_state", "may hold only lowercase letters"),
        ("-acme-state", "must begin and end with a letter or a digit"),
        ("acme-state.", "must begin and end with a letter or a digit"),
        ("acme..state", "must not hold two adjacent dots"),
        ("192.168.5.4", "must not be formatted as an IP address"),
        ("xn--acme", "must not start with xn--, sthree-, amzn-s3-demo-"),
        ("sthree-acme", "must not start with"),
        ("amzn-s3-demo-acme", "must not start with"),
        ("acme-s3alias", "must not end with -s3alias, --ol-s3, .mrap, --x-s3, --table-s3"),
        ("acme--ol-s3", "must not end with"),
        ("acme.mrap", "must not end with"),
        ("acme--x-s3", "must not end with"),
        ("acme--table-s3", "must not end with"),
    ],
)
def test_invalid_bucket_name(name: str, rule: str) -> None:
    run = backbone("bootstrap", "--bucket", name, endpoint=None)
    assert run.code == 2
    assert run.stderr.startswith(f"error: --bucket {name!r} {rule}")
    assert "Traceback" not in run.stderr


def test_bad_alias_and_no_region() -> None:
    run = backbone("bootstrap", "--bucket", BUCKET, "--key-alias", "state-key", endpoint=None)
    assert run.code == 2 and "--key-alias 'state-key' is not a KMS alias" in run.stderr
    run = backbone("bootstrap", "--bucket", BUCKET, "--key-alias", "alias/aws/s3", endpoint=None)
    assert run.code == 2 and "reserved for AWS managed keys" in run.stderr
    run = backbone("bootstrap", "--bucket", BUCKET, endpoint=None)  # no AWS settings at all
    assert run.code == 2
    assert run.stderr.strip() == (
        "error: no AWS region: pass --region, set AWS_REGION, or give the profile a region "
        "(`aws configure set region us-east-1`)"
    )


def test_no_credentials_is_one_line(aws: str) -> None:
    run = backbone(
        "bootstrap",
        "--bucket",
        BUCKET,
        "--region",
        REGION,
        endpoint=None,
        env={"AWS_ENDPOINT_URL": aws, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: no AWS credentials found: run `aws configure` or `aws sso login`, pass "
        "--profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ]


def test_access_denied_is_one_line_and_nothing_is_retried(refusing_aws: tuple[str, Any]) -> None:
    endpoint, refusal = refusing_aws  # S3 says "no such bucket"; KMS refuses
    run = backbone("bootstrap", "--bucket", BUCKET, endpoint=endpoint)
    assert run.code == 1
    assert run.stderr.strip() == (
        "error: kms DescribeKey: access denied (AccessDeniedException): User: "
        "arn:aws:iam::123456789012:user/ci is not authorized; the identity in use needs that "
        "permission (`aws sts get-caller-identity` shows who you are)"
    )
    assert [c.split()[0] for c in refusal.calls] == ["HEAD", "POST"]


def test_bucket_of_another_account(refusing_aws: tuple[str, Any]) -> None:
    endpoint, refusal = refusing_aws
    refusal.s3_head_status = 403  # what S3 answers for a name another account holds
    run = backbone("bootstrap", "--bucket", BUCKET, endpoint=endpoint)
    assert run.code == 1
    assert f"the bucket {BUCKET} already exists and this identity may not use it" in run.stderr
    assert len(refusal.calls) == 1  # nothing after the look


def test_profile_from_the_aws_config_and_in_the_login_line(aws: str, tmp_path: Any) -> None:
    config = tmp_path / "config"
    config.write_text("[profile team]\nregion = eu-central-1\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = team\naws_secret_access_key = team\n")
    run = backbone(
        "bootstrap",
        "--bucket",
        "acme-team-state",
        "--profile",
        "team",
        endpoint=None,
        env={
            "AWS_ENDPOINT_URL": aws,
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert run.code == 0, run.stderr
    # the profile's region was used, and the login line names the profile
    location = client("s3", "eu-central-1").get_bucket_location(Bucket="acme-team-state")
    assert location["LocationConstraint"] == "eu-central-1"
    assert "pulumi login 's3://acme-team-state?region=eu-central-1&awssdk=v2&profile=team'" in (
        run.stdout
    )
