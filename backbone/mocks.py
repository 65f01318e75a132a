"""Realistic mock outputs for the offline engine.

Every resource gets an id and the computed properties its type really has (ARNs in the right shape
and region, DNS names, endpoints), so every ``apply`` in the program runs. Values are derived from
the resource's type and name only, so two plans of the same program are identical.
Provider functions are answered here too; a function with no answer is an error that names it.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import pulumi

ACCOUNT = "123456789012"
PARTITION = "aws"

# Zones per region as AWS lists them (describe-availability-zones, default zones only, 2026).
_ZONE_LETTERS = {
    "us-east-1": "abcdef",
    "us-west-2": "abcd",
    "ap-northeast-1": "acd",
    "us-west-1": "ac",
    "ca-central-1": "abd",
}


def _h(*parts: str, n: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def availability_zones(region: str) -> dict[str, Any]:
    letters = _ZONE_LETTERS.get(region, "abc")
    parts = region.split("-")
    short = parts[0] + "".join(p[0] for p in parts[1:-1]) + parts[-1]  # us-east-1 -> use1
    names = [f"{region}{c}" for c in letters]
    zone_ids = [f"{short}-az{i + 1}" for i in range(len(letters))]
    return {
        "id": region,
        "names": names,
        "zoneIds": zone_ids,
        "groupNames": [region] * len(names),
        "state": "available",
    }


Outputs = dict[str, Any]
Maker = Callable[[str, str, dict[str, Any], str], tuple[str, Outputs]]


def _arn(service: str, region: str, resource: str, *, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def _ec2(prefix: str, kind: str) -> Maker:
    def make(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
        rid = f"{prefix}-{_h(urn)}"
        return rid, {"arn": _arn("ec2", region, f"{kind}/{rid}"), "ownerId": ACCOUNT}

    return make


def _vpc(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    rid = f"vpc-{_h(urn)}"
    return rid, {
        "arn": _arn("ec2", region, f"vpc/{rid}"),
        "defaultSecurityGroupId": f"sg-{_h(urn, 'default')}",
        "mainRouteTableId": f"rtb-{_h(urn, 'main')}",
        "defaultNetworkAclId": f"acl-{_h(urn, 'acl')}",
        "ownerId": ACCOUNT,
    }


def _eip(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    rid = f"eipalloc-{_h(urn)}"
    n = int(_h(urn, n=4), 16)
    return rid, {
        "allocationId": rid,
        "publicIp": f"203.0.113.{n % 250 + 1}",
        "publicDns": f"ec2-203-0-113-{n % 250 + 1}.compute-1.amazonaws.com",
        "arn": _arn("ec2", region, f"elastic-ip/{rid}"),
    }


def _instance(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    rid = f"i-{_h(urn)}"
    n = int(_h(urn, n=4), 16)
    return rid, {
        "arn": _arn("ec2", region, f"instance/{rid}"),
        "privateIp": f"10.0.{n % 250}.{n % 200 + 10}",
        "publicIp": f"198.51.100.{n % 250 + 1}" if inputs.get("associatePublicIpAddress") else "",
        "instanceState": "running",
    }


def _ssm_parameter_resource(
    name: str, urn: str, inputs: dict[str, Any], region: str
) -> tuple[str, Outputs]:
    pname = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    arn = _arn("ssm", region, f"parameter{pname if pname.startswith('/') else '/' + pname}")
    return pname, {"name": pname, "arn": arn, "version": 1}


def _log_group(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    group = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    return group, {"name": group, "arn": _arn("logs", region, f"log-group:{group}")}


def _iam(kind: str) -> Maker:
    def make(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
        rname = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
        path = inputs.get("path", "/")
        return rname, {
            "name": rname,
            "arn": f"arn:{PARTITION}:iam::{ACCOUNT}:{kind}{path}{rname}",
            "uniqueId": f"ARO{_h(urn, n=17).upper()}",
        }

    return make


def _named(service: str, kind: str, sep: str = "/") -> Maker:
    """Resources whose id is their (generated) name and whose ARN ends in kind/name."""

    def make(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
        rname = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
        return rname, {"name": rname, "arn": _arn(service, region, f"{kind}{sep}{rname}")}

    return make


def _ecr_repo(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    repo = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    return repo, {
        "name": repo,
        "arn": _arn("ecr", region, f"repository/{repo}"),
        "registryId": ACCOUNT,
        "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{repo}",
    }


def _docker_image(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    image = str(inputs.get("imageName", name))
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{repo}@sha256:{digest}", {
        "imageName": image,
        "baseImageName": image,
        "repoDigest": f"{repo}@sha256:{digest}",
        "registryServer": image.split("/")[0],
    }


def _eks_cluster(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    cname = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    oidc = _h(urn, "oidc", n=32).upper()
    vpc = dict(inputs.get("vpcConfig") or {})
    vpc["clusterSecurityGroupId"] = f"sg-{_h(urn, 'cluster-sg')}"
    vpc["vpcId"] = f"vpc-{_h(urn, 'vpc')}"
    return cname, {
        "name": cname,
        "arn": _arn("eks", region, f"cluster/{cname}"),
        "endpoint": f"https://{oidc}.gr7.{region}.eks.amazonaws.com",
        "certificateAuthority": {"data": base64.b64encode(b"offline CA " + oidc.encode()).decode()},
        "identities": [
            {"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc}"}]}
        ],
        "vpcConfig": vpc,
        "platformVersion": "eks.1",
        "status": "ACTIVE",
    }


def _node_group(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    ng = f"{name}-{_h(urn, n=8)}"
    cluster = inputs.get("clusterName", "cluster")
    asg = f"eks-{ng}-{_h(urn, 'asg', n=8)}"
    return f"{cluster}:{ng}", {
        "nodeGroupName": ng,
        "arn": _arn("eks", region, f"nodegroup/{cluster}/{ng}/{_h(urn, n=8)}"),
        "resources": [{"autoscalingGroups": [{"name": asg}], "remoteAccessSecurityGroupId": ""}],
        "status": "ACTIVE",
    }


def _oidc_provider(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    host = str(inputs.get("url", "")).removeprefix("https://")
    arn = f"arn:{PARTITION}:iam::{ACCOUNT}:oidc-provider/{host}"
    return arn, {"arn": arn}


def _rds_instance(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    ident = inputs.get("identifier") or f"{name}-{_h(urn, n=7)}"
    address = f"{ident}.c{_h(urn, n=12)}.{region}.rds.amazonaws.com"
    out: Outputs = {
        "identifier": ident,
        "arn": _arn("rds", region, f"db:{ident}"),
        "address": address,
        "endpoint": f"{address}:{inputs.get('port', 5432)}",
        "resourceId": f"db-{_h(urn, n=26).upper()}",
        "hostedZoneId": "Z2R2ITUGPM61AM",
    }
    if inputs.get("manageMasterUserPassword"):
        out["masterUserSecrets"] = [
            {
                "secretArn": _arn("secretsmanager", region, f"secret:rds!{ident}-{_h(urn, n=6)}"),
                "secretStatus": "active",
                "kmsKeyId": "",
            }
        ]
    return ident, out


def _lb(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    lb = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    suffix = f"app/{lb}/{_h(urn, n=16)}"
    arn = _arn("elasticloadbalancing", region, f"loadbalancer/{suffix}")
    return arn, {
        "arn": arn,
        "arnSuffix": suffix,
        "dnsName": f"{lb}-{int(_h(urn, n=8), 16)}.{region}.elb.amazonaws.com",
        "zoneId": "Z35SXDOTRQ7X7K",
        "name": lb,
    }


def _target_group(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    tg = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    suffix = f"targetgroup/{tg}/{_h(urn, n=16)}"
    arn = _arn("elasticloadbalancing", region, suffix)
    return arn, {"arn": arn, "arnSuffix": suffix, "name": tg}


def _listener(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    arn = _arn("elasticloadbalancing", region, f"listener/app/{name}/{_h(urn, n=16)}")
    return arn, {"arn": arn}


def _bucket(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    bucket = inputs.get("bucket") or f"{name}-{_h(urn, n=7)}"
    return bucket, {
        "bucket": bucket,
        "arn": f"arn:{PARTITION}:s3:::{bucket}",
        "bucketDomainName": f"{bucket}.s3.amazonaws.com",
        "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
    }


def _random_password(
    name: str, urn: str, inputs: dict[str, Any], region: str
) -> tuple[str, Outputs]:
    # Not a real secret: the offline engine never makes one. The engine marks it secret anyway.
    return "none", {"result": f"offline-{_h(urn, n=int(inputs.get('length', 16)))}"}


def _docker_named(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    """Docker networks, volumes, containers: the engine's 64-hex id; the name as given."""
    rid = hashlib.sha256(urn.encode()).hexdigest()
    return rid, {"name": inputs.get("name") or f"{name}-{_h(urn, n=7)}"}


def _remote_image(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    image_id = "sha256:" + hashlib.sha256(str(inputs.get("name")).encode()).hexdigest()
    return f"{image_id}{inputs.get('name')}", {"imageId": image_id, "repoDigest": ""}


def _random_id(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    raw = bytes.fromhex(_h(urn, "id", n=2 * int(inputs.get("byteLength", 4))))
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return b64, {
        "hex": raw.hex(),
        "b64Url": b64,
        "b64Std": base64.b64encode(raw).decode(),
        "dec": str(int.from_bytes(raw, "big")),
    }


MAKERS: dict[str, Maker] = {
    "random:index/randomId:RandomId": _random_id,
    "docker:index/network:Network": _docker_named,
    "docker:index/volume:Volume": _docker_named,
    "docker:index/container:Container": _docker_named,
    "docker:index/remoteImage:RemoteImage": _remote_image,
    "aws:ecr/repository:Repository": _ecr_repo,
    "docker:index/image:Image": _docker_image,
    "aws:eks/cluster:Cluster": _eks_cluster,
    "aws:eks/nodeGroup:NodeGroup": _node_group,
    "aws:eks/addon:Addon": _named("eks", "addon"),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": _oidc_provider,
    "aws:rds/instance:Instance": _rds_instance,
    "aws:rds/subnetGroup:SubnetGroup": _named("rds", "subgrp", sep=":"),
    "aws:rds/parameterGroup:ParameterGroup": _named("rds", "pg", sep=":"),
    "aws:lb/loadBalancer:LoadBalancer": _lb,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:lb/listener:Listener": _listener,
    "aws:s3/bucket:Bucket": _bucket,
    "random:index/randomPassword:RandomPassword": _random_password,
    "aws:ec2/vpc:Vpc": _vpc,
    "aws:ec2/subnet:Subnet": _ec2("subnet", "subnet"),
    "aws:ec2/internetGateway:InternetGateway": _ec2("igw", "internet-gateway"),
    "aws:ec2/natGateway:NatGateway": _ec2("nat", "natgateway"),
    "aws:ec2/routeTable:RouteTable": _ec2("rtb", "route-table"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _ec2(
        "rtbassoc", "route-table-association"
    ),
    "aws:ec2/route:Route": _ec2("r", "route"),
    "aws:ec2/securityGroup:SecurityGroup": _ec2("sg", "security-group"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _ec2("sgr", "security-group-rule"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _ec2("sgr", "security-group-rule"),
    "aws:ec2/flowLog:FlowLog": _ec2("fl", "vpc-flow-log"),
    "aws:ec2/eip:Eip": _eip,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:iam/role:Role": _iam("role"),
    "aws:iam/policy:Policy": _iam("policy"),
    "aws:iam/rolePolicy:RolePolicy": _named("iam", "role-policy"),
    "aws:iam/instanceProfile:InstanceProfile": _iam("instance-profile"),
    "aws:ssm/parameter:Parameter": _ssm_parameter_resource,
    "aws:ec2/instance:Instance": _instance,
    "aws:sns/topic:Topic": _named("sns", "", sep=""),
}


def register(type_token: str) -> Callable[[Maker], Maker]:
    """Add a maker for a type (used by modules that bring new resource types)."""

    def deco(fn: Maker) -> Maker:
        MAKERS[type_token] = fn
        return fn

    return deco


@register("aws:lambda/function:Function")
def _lambda(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    fn = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    arn = _arn("lambda", region, f"function:{fn}")
    return fn, {
        "name": fn,
        "arn": arn,
        "qualifiedArn": f"{arn}:1",
        "invokeArn": f"arn:{PARTITION}:apigateway:{region}:lambda:path/2015-03-31/functions/"
        f"{arn}/invocations",
        "version": "1",
        "lastModified": "2026-01-01T00:00:00.000+0000",
        "sourceCodeHash": base64.b64encode(hashlib.sha256(urn.encode()).digest()).decode(),
    }


@register("aws:kms/key:Key")
def _kms_key(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    h = _h(urn, n=32)
    key_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    return key_id, {"keyId": key_id, "arn": _arn("kms", region, f"key/{key_id}")}


@register("aws:sqs/queue:Queue")
def _sqs_queue(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    queue = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    url = f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{queue}"
    return url, {"name": queue, "arn": _arn("sqs", region, queue), "url": url}


@register("aws:cloudwatch/metricAlarm:MetricAlarm")
def _alarm(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    alarm = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    return alarm, {"name": alarm, "arn": _arn("cloudwatch", region, f"alarm:{alarm}")}


@register("aws:cloudwatch/dashboard:Dashboard")
def _dashboard(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    board = inputs.get("dashboardName") or f"{name}-{_h(urn, n=7)}"
    # Dashboards are global: their ARN has no region.
    return board, {"dashboardArn": f"arn:{PARTITION}:cloudwatch::{ACCOUNT}:dashboard/{board}"}


@register("aws:cloudwatch/eventRule:EventRule")
def _event_rule(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    rule = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    return rule, {"name": rule, "arn": _arn("events", region, f"rule/{rule}")}


@register("aws:sns/topicSubscription:TopicSubscription")
def _subscription(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    arn = f"{inputs.get('topic', _arn('sns', region, name))}:{_h(urn, n=8)}-{_h(urn, 's', n=4)}"
    return arn, {"arn": arn, "ownerId": ACCOUNT, "pendingConfirmation": True}


@register("aws:amp/workspace:Workspace")
def _amp_workspace(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    wid = f"ws-{_h(urn, n=8)}-{_h(urn, 'a', n=4)}-{_h(urn, 'b', n=4)}-{_h(urn, 'c', n=4)}"
    return wid, {
        "arn": _arn("aps", region, f"workspace/{wid}"),
        "prometheusEndpoint": f"https://aps-workspaces.{region}.amazonaws.com/workspaces/{wid}/",
    }


@register("aws:grafana/workspace:Workspace")
def _grafana_workspace(
    name: str, urn: str, inputs: dict[str, Any], region: str
) -> tuple[str, Outputs]:
    # botocore grafana WorkspaceId: g-[0-9a-f]{10}; the endpoint is the workspace's own host.
    wid = f"g-{_h(urn, n=10)}"
    return wid, {
        "arn": _arn("grafana", region, f"/workspaces/{wid}"),
        "endpoint": f"{wid}.grafana-workspace.{region}.amazonaws.com",
        "grafanaVersion": inputs.get("grafanaVersion") or "10.4",
    }


@register("aws:amp/scraper:Scraper")
def _amp_scraper(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    sid = f"s-{_h(urn, n=8)}-{_h(urn, 'a', n=4)}-{_h(urn, 'b', n=4)}-{_h(urn, 'c', n=4)}"
    role = f"AWSServiceRoleForAmazonPrometheusScraper_{_h(urn, 'r', n=15)}"
    return sid, {
        "arn": _arn("aps", region, f"scraper/{sid}"),
        "roleArn": f"arn:{PARTITION}:iam::{ACCOUNT}:role/aws-service-role/"
        f"scraper.aps.amazonaws.com/{role}",
    }


@register("aws:secretsmanager/secret:Secret")
def _secret(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    secret = inputs.get("name") or f"{name}-{_h(urn, n=7)}"
    arn = _arn("secretsmanager", region, f"secret:{secret}-{_h(urn, n=6)}")
    return arn, {"name": secret, "arn": arn}


@register("aws:secretsmanager/secretVersion:SecretVersion")
def _secret_version(
    name: str, urn: str, inputs: dict[str, Any], region: str
) -> tuple[str, Outputs]:
    version = _h(urn, n=32)
    return f"{inputs.get('secretId', '')}|{version}", {
        "arn": inputs.get("secretId", ""),
        "versionId": version,
        "versionStages": ["AWSCURRENT"],
    }


def _generic(name: str, urn: str, inputs: dict[str, Any], region: str) -> tuple[str, Outputs]:
    rid = f"{name}-{_h(urn, n=8)}"
    return rid, {}


SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}


class BackboneMocks(pulumi.runtime.Mocks):
    """Answers the engine's calls the way AWS would, offline and deterministically."""

    def __init__(self, stack: str, project: str, region: str | None) -> None:
        self.stack = stack
        self.project = project
        self.region = region or "us-east-1"
        # Registrations run on executor threads: each thread says which outputs of the resource
        # it is registering the engine must return as secrets (additionalSecretOutputs).
        self._call = threading.local()

    def expect_secret_outputs(self, names: list[str]) -> None:
        self._call.secret_outputs = names

    def _mark_secrets(self, state: dict[str, Any]) -> dict[str, Any]:
        for key in getattr(self._call, "secret_outputs", ()):
            if key in state:
                state[key] = {**SECRET_SIG, "value": state[key]}
        self._call.secret_outputs = ()
        return state

    def _urn(self, typ: str, name: str) -> str:
        return f"{self.project}::{self.stack}::{typ}::{name}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider", dict(args.inputs)
        if not args.custom:
            return None, {}
        urn = self._urn(args.typ, args.name)
        maker = MAKERS.get(args.typ, _generic)
        region = args.inputs.get("region") or self.region
        rid, outputs = maker(args.name, urn, args.inputs, region)
        state = {**args.inputs, **outputs, "id": rid}
        if "tags" in args.inputs or args.typ.startswith("aws:"):
            state.setdefault("tagsAll", args.inputs.get("tags") or {})
        return rid, self._mark_secrets(state)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:  # type: ignore[override]
        answer = CALLS.get(args.token)
        if answer is None:
            raise NotImplementedError(
                f"the offline engine has no answer for the provider function {args.token!r}; "
                "add one in backbone/mocks.py"
            )
        return answer(self, args.args)


def _get_azs(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    region = a.get("region") or m.region
    zones = availability_zones(region)
    excluded = set(a.get("excludeZoneIds") or [])
    keep = [i for i, z in enumerate(zones["zoneIds"]) if z not in excluded]
    for key in ("names", "zoneIds", "groupNames"):
        zones[key] = [zones[key][i] for i in keep]
    return zones


def _session_context(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    arn = str(a.get("arn", ""))
    issuer = arn
    if ":assumed-role/" in arn:  # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION
        account = arn.split(":")[4]
        role = arn.split(":assumed-role/")[1].split("/")[0]
        issuer = f"arn:{PARTITION}:iam::{account}:role/{role}"
    return {
        "arn": arn,
        "issuerArn": issuer,
        "issuerId": "",
        "issuerName": "",
        "sessionName": "",
        "id": arn,
    }


def _acm_certificate(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    """The newest ISSUED certificate for a domain, as if the account held one."""
    domain = str(a.get("domain", ""))
    h = _h(f"acm:{domain}", n=32)
    cert_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    return {
        "arn": _arn("acm", m.region, f"certificate/{cert_id}"),
        "domain": domain,
        "id": domain,
        "status": "ISSUED",
        "statuses": a.get("statuses") or ["ISSUED"],
        "types": ["AMAZON_ISSUED"],
        "keyTypes": ["RSA_2048"],
        "mostRecent": bool(a.get("mostRecent")),
        "certificate": "",
        "certificateChain": "",
        "tags": {},
    }


def _ssm_parameter(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    """A parameter as SSM returns it; AWS's public AMI parameters name an image id."""
    name = str(a.get("name", ""))
    if not name.startswith("/aws/service/ami-"):
        raise NotImplementedError(
            f"the offline engine answers only AWS's public AMI parameters, not {name!r}"
        )
    return {
        "arn": _arn("ssm", m.region, f"parameter{name}", account="aws"),
        "id": name,
        "name": name,
        "type": "String",
        "value": f"ami-{_h('ami', m.region, name)}",
        "insecureValue": f"ami-{_h('ami', m.region, name)}",
        "version": 1,
        "withDecryption": bool(a.get("withDecryption", True)),
    }


def _addon_version(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    name, k8s = str(a.get("addonName", "")), str(a.get("kubernetesVersion", ""))
    return {
        "addonName": name,
        "kubernetesVersion": k8s,
        "mostRecent": bool(a.get("mostRecent")),
        "version": f"v{k8s}.0-offline-eksbuild.1",
        "id": name,
    }


def _eks_ami_release(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
    """AWS's public EKS AMI parameters: /aws/service/eks/optimized-ami/<k8s>/.../release_version."""
    name = str(a.get("name", ""))
    version = name.split("/")[5]
    value = f"{version}.0-20261120" if name.endswith("/release_version") else "ami-0offline"
    return {"name": name, "value": value, "type": "String", "version": 1, "arn": "", "id": name,
            "insecureValue": value, "withDecryption": bool(a.get("withDecryption", True))}  # fmt: skip


CALLS: dict[str, Callable[[BackboneMocks, dict[str, Any]], dict[str, Any]]] = {
    "aws:ssm/getParameter:getParameter": _ssm_parameter,
    "aws:acm/getCertificate:getCertificate": _acm_certificate,
    "aws:iam/getSessionContext:getSessionContext": _session_context,
    "aws:secretsmanager/getSecretVersion:getSecretVersion": lambda m, a: {
        "arn": a.get("secretId", ""),
        "id": a.get("secretId", ""),
        "secretId": a.get("secretId", ""),
        "secretString": '{"username": "app_admin", "password": "offline-managed-password"}',
        "versionId": "offline",
        "versionStages": ["AWSCURRENT"],
    },
    "aws:index/getAvailabilityZones:getAvailabilityZones": _get_azs,
    "aws:index/getCallerIdentity:getCallerIdentity": lambda m, a: {
        "accountId": ACCOUNT,
        "arn": f"arn:{PARTITION}:iam::{ACCOUNT}:user/deployer",
        "userId": "AIDAOFFLINEDEPLOYER",
        "id": ACCOUNT,
    },
    "aws:index/getRegion:getRegion": lambda m, a: {
        "name": m.region,
        "region": m.region,
        "id": m.region,
        "endpoint": f"ec2.{m.region}.amazonaws.com",
        "description": m.region,
    },
    "aws:index/getPartition:getPartition": lambda m, a: {
        "partition": PARTITION,
        "dnsSuffix": "amazonaws.com",
        "id": PARTITION,
        "reverseDnsPrefix": "com.amazonaws",
    },
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda m, a: {
        "authorizationToken": base64.b64encode(b"AWS:offline-token").decode(),
        "userName": "AWS",
        "password": "offline-token",
        "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{m.region}.amazonaws.com",
        "expiresAt": "2099-01-01T00:00:00Z",
        "id": m.region,
    },
    # EKS lookups the cluster makes at deploy time (infra/components/cluster.py): as on a first
    # deploy, no node group exists yet; add-on and AMI versions follow the Kubernetes version
    # asked for (offline stand-ins in AWS's formats, not AWS's real build numbers).
    "aws:eks/getNodeGroups:getNodeGroups": lambda m, a: {
        "clusterName": a.get("clusterName", ""),
        "names": [],
        "id": a.get("clusterName", ""),
    },
    "aws:eks/getAddonVersion:getAddonVersion": _addon_version,
}


def _ssm_or_eks(fallback: Callable[[BackboneMocks, dict[str, Any]], dict[str, Any]] | None) -> Any:
    def answer(m: BackboneMocks, a: dict[str, Any]) -> dict[str, Any]:
        if str(a.get("name", "")).startswith("/aws/service/eks/optimized-ami/"):
            return _eks_ami_release(m, a)
        if fallback is None:
            raise NotImplementedError(f"the offline engine has no SSM parameter {a.get('name')!r}")
        return fallback(m, a)

    return answer


# SSM: the EKS AMI release parameters here, any other parameter as answered above.
CALLS["aws:ssm/getParameter:getParameter"] = _ssm_or_eks(
    CALLS.get("aws:ssm/getParameter:getParameter")
)
