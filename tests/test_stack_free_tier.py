"""free-tier: the sample app on a learner's own account, $0.00 a month under the 12-month offers.

One EC2 host runs the app's container with its RDS database and its image in ECR; nothing that
is never free (NAT, EKS, Multi-AZ, customer KMS keys, interface endpoints, Secrets Manager).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.components.host import AMI_PARAMETER, ECR_PULL_ACTIONS, SESSION_MANAGER_ACTIONS
from tests.network_checks import check_network

REPO = Path(__file__).resolve().parent.parent
INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
RDS = "aws:rds/instance:Instance"


def free_tier_file(
    tmp_path: Path, name: str = "free-tier", drop: tuple[str, ...] = (), **sections: dict
) -> Path:
    """The shipped free-tier stack file with some sections merged over it, some keys dropped."""
    config = yaml.safe_load((REPO / "stacks" / "Pulumi.free-tier.yaml").read_text())["config"]
    for key in drop:
        config.pop(key)
    for key, values in sections.items():
        section = f"backbone:{key}"
        config[section] = {**config.get(section, {}), **values}
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_network_has_no_nat_and_private_subnets_are_isolated(plan_of):
    plan = plan_of("free-tier")
    check_network(plan, azs=2, nat=0, cidr="10.10.0.0/16")
    assert plan.outputs["natGatewayCount"] == 0
    # the one Elastic IP is the host's address, not a NAT gateway's
    (eip,) = plan.of_type("aws:ec2/eip:Eip")
    assert eip.inputs["instance"] == plan.one(INSTANCE).id


def test_every_aws_resource_uses_the_one_tagged_provider(plan_of):
    plan = plan_of("free-tier")
    provider = plan.one("pulumi:providers:aws")
    # Provider inputs reach the engine as strings, objects as JSON (as in a real preview).
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert tags["backbone:stack"] == "free-tier"
    assert tags["managed-by"] == "pulumi"
    aws = [r for r in plan.managed() if r.package == "aws"]
    assert aws and all(r.provider == provider.urn for r in aws)


def test_the_stack_has_the_host_the_image_and_the_database(plan_of):
    plan = plan_of("free-tier")
    host = plan.one(INSTANCE)
    assert host.inputs["instanceType"] == "t3.micro"
    assert plan.one("aws:ecr/repository:Repository")
    assert plan.one(RDS)
    assert plan.outputs["url"] == f"http://{plan.one('aws:ec2/eip:Eip').outputs['publicIp']}"
    assert plan.outputs["hostInstanceId"] == host.id
    assert plan.outputs["appApiToken"] == "[secret]"
    # the image the host pulls is the one the registry pushed, by digest
    assert "@sha256:" in plan.outputs["imageRef"]
    assert f"IMAGE={plan.outputs['imageRef']}\n" in host.inputs["userData"]
    assert host.inputs["userDataReplaceOnChange"] is True


def test_nothing_that_is_never_free(plan_of):
    plan = plan_of("free-tier")
    types = {r.type for r in plan.managed()}
    never_free = {
        "aws:ec2/natGateway:NatGateway",
        "aws:eks/cluster:Cluster",
        "aws:kms/key:Key",
        "aws:secretsmanager/secret:Secret",
        "aws:ec2/vpcEndpoint:VpcEndpoint",
        "aws:lb/loadBalancer:LoadBalancer",
    }
    assert types & never_free == set()
    (db,) = plan.of_type(RDS)
    assert db.inputs["multiAz"] is False
    assert "manageMasterUserPassword" not in db.inputs  # no Secrets Manager secret by RDS either


def test_only_free_tier_types_and_sizes(plan_of):
    plan = plan_of("free-tier")
    host = plan.one(INSTANCE).inputs
    assert host["instanceType"] in ("t3.micro", "t2.micro")
    root = host["rootBlockDevice"]
    assert root["encrypted"] is True and root["volumeSize"] <= 30
    assert root["deleteOnTermination"] is True  # nothing left billing after a destroy
    # T3 "unlimited" bills surplus CPU credits; detailed monitoring bills per metric
    assert host["creditSpecification"] == {"cpuCredits": "standard"}
    assert host["monitoring"] is False
    db = plan.one(RDS).inputs
    assert db["instanceClass"] in ("db.t4g.micro", "db.t3.micro")
    assert db["allocatedStorage"] == 20 and db["storageType"] == "gp2"
    assert "maxAllocatedStorage" not in db  # no autoscaling past the free 20 GB
    assert db["engineLifecycleSupport"] == "open-source-rds-extended-support-disabled"
    # ECR: the lifecycle keeps 3 images of about 100 MB, under the free 500 MB
    rule = json.loads(plan.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    assert rule["rules"][0]["selection"]["countNumber"] * 100 <= 500


def test_alarms_and_dashboards_inside_the_always_free_allowances(plan_of):
    from tests.test_monitoring import FREE, free_tier_usage

    plan = plan_of("free-tier")
    alarms = plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert 1 <= len(alarms) <= 10
    assert {a.inputs["metricName"] for a in alarms} >= {"EstimatedCharges", "CPUUtilization"}
    # the host heals itself with EC2's own actions on its status checks
    host = plan.one(INSTANCE)
    topic = plan.one("aws:sns/topic:Topic").outputs["arn"]
    healing = {
        a.inputs["metricName"]: a.inputs["alarmActions"]
        for a in alarms
        if a.inputs.get("dimensions") == {"InstanceId": host.id}
    }
    assert healing == {
        "StatusCheckFailed_System": ["arn:aws:automate:us-east-1:ec2:recover", topic],
        "StatusCheckFailed_Instance": ["arn:aws:automate:us-east-1:ec2:reboot", topic],
    }
    names = sorted(a.inputs["name"] for a in alarms)
    assert sorted(plan.outputs["alarmNames"]) == names  # what backbone verify checks
    assert not plan.of_type("aws:kms/key:Key")  # a customer key is $1/month
    usage = free_tier_usage(plan)
    assert all(usage[k] <= FREE[k] for k in FREE), usage


def test_host_requires_imdsv2_and_its_ami_is_looked_up_at_run_time(plan_of, backbone_cli, tmp_path):
    host = plan_of("free-tier").one(INSTANCE).inputs
    # IMDSv2 only; hop limit 1: the containers (one hop further) never reach the role's keys
    assert host["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    assert AMI_PARAMETER.endswith("al2023-ami-kernel-default-x86_64")
    # The AMI comes from the public SSM parameter of the stack's region, not from the program.
    # (billing metrics exist in us-east-1 only; prices.yaml prices us-east-1 only: no budget)
    other = free_tier_file(tmp_path, "free-tier-eu", drop=("backbone:budget",))
    text = other.read_text().replace("us-east-1", "eu-west-1")
    other.write_text(text.replace("billingAlarmUsd: 5", "alertEmail: null"))
    result = backbone_cli("plan", str(other), "-f", "json")
    assert result.returncode == 0, result.stderr
    eu = next(r for r in json.loads(result.stdout)["resources"] if r["type"] == INSTANCE)
    assert eu["inputs"]["ami"].startswith("ami-") and host["ami"].startswith("ami-")
    assert eu["inputs"]["ami"] != host["ami"]
    assert host["ami"] not in (REPO / "infra" / "components" / "host.py").read_text()


def test_no_ssh_anywhere(plan_of):
    plan = plan_of("free-tier")
    host = plan.one(INSTANCE).inputs
    assert "keyName" not in host  # no key pair: Session Manager through the instance profile
    for rule in plan.of_type(INGRESS):
        low, high = rule.inputs.get("fromPort", 0), rule.inputs.get("toPort", 65535)
        assert not low <= 22 <= high, rule.name
    host_sg = host["vpcSecurityGroupIds"]
    ingress = [r for r in plan.of_type(INGRESS) if r.inputs["securityGroupId"] in host_sg]
    assert [(r.inputs["fromPort"], r.inputs["cidrIpv4"]) for r in ingress] == [(80, "0.0.0.0/0")]
    egress = sorted(
        r.inputs["fromPort"] for r in plan.of_type(EGRESS) if r.inputs["securityGroupId"] in host_sg
    )
    assert egress == [443, 5432]


def test_the_database_admits_only_the_host(plan_of):
    plan = plan_of("free-tier")
    db = plan.one(RDS).inputs
    assert db["publiclyAccessible"] is False
    (db_sg,) = db["vpcSecurityGroupIds"]
    (host_sg,) = plan.one(INSTANCE).inputs["vpcSecurityGroupIds"]
    rules = [r for r in plan.of_type(INGRESS) if r.inputs["securityGroupId"] == db_sg]
    assert rules and all(r.inputs.get("referencedSecurityGroupId") == host_sg for r in rules)
    assert all("cidrIpv4" not in r.inputs for r in rules)
    # and the host reaches it on 5432 only
    (to_db,) = [r for r in plan.of_type(EGRESS) if r.inputs.get("referencedSecurityGroupId")]
    assert to_db.inputs["referencedSecurityGroupId"] == db_sg and to_db.inputs["fromPort"] == 5432


def test_instance_profile_pulls_from_its_repository_and_reads_its_parameter_only(plan_of):
    plan = plan_of("free-tier")
    host = plan.one(INSTANCE).inputs
    profile = plan.one("aws:iam/instanceProfile:InstanceProfile")
    assert host["iamInstanceProfile"] == profile.outputs["name"]
    role = plan.one("aws:iam/role:Role", "host-role")
    assert profile.inputs["role"] == role.outputs["name"]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    # no managed policy (AmazonSSMManagedInstanceCore reads every parameter): one inline policy
    attached = [
        r
        for r in plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.inputs["role"] == role.outputs["name"]
    ]
    assert attached == []
    (policy,) = [
        r
        for r in plan.of_type("aws:iam/rolePolicy:RolePolicy")
        if r.inputs["role"] == role.outputs["name"]
    ]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    repo = plan.one("aws:ecr/repository:Repository").outputs["arn"]
    parameter = plan.one("aws:ssm/parameter:Parameter").outputs["arn"]
    grants = {
        (a, s["Resource"])
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert grants == {
        *((a, "*") for a in SESSION_MANAGER_ACTIONS),
        ("ecr:GetAuthorizationToken", "*"),
        *((a, repo) for a in ECR_PULL_ACTIONS),
        ("ssm:GetParameter", parameter),
    }


def test_the_password_reaches_the_host_as_a_free_securestring(plan_of):
    plan = plan_of("free-tier")
    (parameter,) = plan.of_type("aws:ssm/parameter:Parameter")
    p = parameter.inputs
    assert p["type"] == "SecureString" and p["tier"] == "Standard"
    assert "keyId" not in p  # the AWS managed key aws/ssm: no customer key
    assert p["value"] == "[secret]"
    host = plan.one(INSTANCE).inputs
    assert f"PARAMETER={p['name']}\n" in host["userData"]
    # nothing secret in the user data (it is readable by anyone who may describe the instance)
    assert "postgresql://" not in host["userData"] and "PASSWORD" not in host["userData"]


def test_cost_is_zero_under_the_12_month_offers_and_shown_otherwise(backbone_cli):
    result = backbone_cli("cost", "free-tier", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["freeTier"] == "12-month"
    assert report["totalUsd"] == 0.00 and report["unpriced"] == []
    assert report["grossUsd"] > 25  # what the offers pay for
    for mode in ("free-plan", "none"):
        other = backbone_cli("cost", "free-tier", "--free-tier", mode, "--format", "json")
        assert other.returncode == 1, other.stderr  # over the budget of 0
        assert json.loads(other.stdout)["totalUsd"] > 25


def test_a_load_balancer_stays_possible_at_its_shown_cost(backbone_cli, tmp_path):
    path = free_tier_file(tmp_path, "free-tier-lb", loadbalancer={"enabled": True})
    plan = backbone_cli("plan", str(path), "-f", "json")
    assert plan.returncode == 0, plan.stderr
    resources = json.loads(plan.stdout)["resources"]
    (attachment,) = [r for r in resources if r["type"].startswith("aws:lb/targetGroupAttachment")]
    assert attachment["inputs"]["port"] == 80
    host_sg = next(r for r in resources if r["type"] == INSTANCE)["inputs"]["vpcSecurityGroupIds"]
    # behind the load balancer the host takes HTTP from the load balancer's group only
    public = [
        r
        for r in resources
        if r["type"] == INGRESS
        and r["inputs"]["securityGroupId"] in host_sg
        and r["inputs"].get("cidrIpv4")
    ]
    assert public == []
    cost = backbone_cli("cost", str(path), "--format", "json")
    assert cost.returncode == 1  # over the budget of 0: the addresses pass the free 750 hours
    report = json.loads(cost.stdout)
    ipv4 = [x for x in report["lines"] if x["item"] == "ipv4/hour"]
    assert sum(x["quantity"] for x in ipv4) == 3 * 730  # two ALB addresses and the host's
    # by hand: 3 x 730 = 2,190 address-hours, 750 free: 1,440 x $0.005 = $7.20; then the ALB's
    # capacity past its free LCUs and the alarms past the free 10
    assert sum(x["usd"] for x in ipv4) == pytest.approx(7.20, abs=0.01)
    assert report["totalUsd"] > 7.20


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"host": {"instanceType": "t3.small"}}, "backbone:host.instanceType: 't3.small' is outside the free tier"),
        ({"host": {"instanceType": "t4g.micro"}}, "backbone:host.instanceType: 't4g.micro' is a Graviton"),
        ({"host": {"rootVolumeGb": 40}}, "backbone:host.rootVolumeGb: 40 GiB is more than the free tier's 30 GB"),
        ({"database": {"enabled": False}}, "backbone:database.enabled: false, but host.enabled is true"),
        ({"database": {"storageType": "gp3"}}, "backbone:database.storageType: 'gp3' is not free"),
        ({"database": {"multiAz": True}}, "backbone:database.multiAz: true is never free"),
        ({"database": {"managePassword": True}}, "backbone:database.managePassword: true keeps the master password in Secrets Manager"),
        ({"registry": {"keepImages": 10}}, "backbone:registry.keepImages: 10 images of about 100 MB pass"),
    ],
)  # fmt: skip
def test_free_tier_settings_are_checked(backbone_cli, tmp_path, sections, expected):
    result = backbone_cli("plan", str(free_tier_file(tmp_path, **sections)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr


def test_t2_micro_is_allowed_where_a_region_lacks_t3(backbone_cli, tmp_path):
    path = free_tier_file(tmp_path, host={"instanceType": "t2.micro"})
    result = backbone_cli("plan", str(path), "-f", "json")
    assert result.returncode == 0, result.stderr
    host = next(r for r in json.loads(result.stdout)["resources"] if r["type"] == INSTANCE)
    assert host["inputs"]["instanceType"] == "t2.micro"


# -- the canary: a Lambda outside the VPC probing the host's own public address ---------------

LAMBDA = "aws:lambda/function:Function"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def _migration_settings(user_data: str) -> dict[str, str]:
    """The host's MIGRATION_SETTINGS array, as bash itself reads it from the user data."""
    import shlex

    (line,) = [x for x in user_data.splitlines() if x.startswith("MIGRATION_SETTINGS=(")]
    words = shlex.split(line.removeprefix("MIGRATION_SETTINGS=(").removesuffix(")"))
    assert words[::2] == ["-e"] * (len(words) // 2)
    return dict(w.split("=", 1) for w in words[1::2])


def test_the_canary_probes_the_hosts_public_address_without_a_vpc(plan_of):
    plan = plan_of("free-tier")
    (canary,) = plan.of_type(LAMBDA)  # the canary only: no housekeeping job here
    assert canary.inputs["handler"] == "canary.handler"
    assert "vpcConfig" not in canary.inputs  # outside the VPC: the internet without a NAT
    env = canary.inputs["environment"]["variables"]
    # the host's Elastic IP, the URL the stack outputs (what a learner opens)
    assert env["CANARY_BASE_URL"] == plan.outputs["url"]
    assert env["CANARY_BASE_URL"] == f"http://{plan.one('aws:ec2/eip:Eip').outputs['publicIp']}"
    assert plan.outputs["canaryFunction"] == canary.outputs["name"]
    assert "housekeepingFunction" not in plan.outputs
    # the known link: the host's migration creates it, the canary reads it and follows it
    made = _migration_settings(plan.one(INSTANCE).inputs["userData"])
    assert made == {
        "CANARY_LINK_CODE": env["CANARY_REDIRECT_CODE"],
        "CANARY_LINK_URL": env["CANARY_REDIRECT_URL"],
    }
    assert env["CANARY_READ_PATH"] == f"/api/links/{made['CANARY_LINK_CODE']}"
    assert "CANARY_READ_ACCEPT_STATUS" not in env  # the link exists: its lookup answers 200
    # its role: its logs, its metrics namespace, the failures queue; no VPC, no secret
    (policy,) = [
        r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.startswith("functions")
    ]
    actions = {
        a
        for s in json.loads(policy.inputs["policy"])["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "cloudwatch:PutMetricData",
        "sqs:SendMessage",
    }
    (rule,) = plan.of_type("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "rate(5 minutes)"


def test_no_housekeeping_job_and_no_secret_on_the_free_stack(plan_of):
    plan = plan_of("free-tier")
    assert not plan.of_type("aws:secretsmanager/secret:Secret")
    assert not [r for r in plan.managed() if "housekeeping" in r.name]
    # the database still admits the host alone (no job security group)
    (db_sg,) = plan.one(RDS).inputs["vpcSecurityGroupIds"]
    assert len([r for r in plan.of_type(INGRESS) if r.inputs["securityGroupId"] == db_sg]) == 1


def test_the_canarys_one_alarm_is_the_tenth_free_alarm_metric(plan_of):
    plan = plan_of("free-tier")
    alarms = plan.of_type(ALARM)
    assert len(alarms) == 10
    (canary,) = [a for a in alarms if a.inputs.get("namespace") == "Backbone/Canary"]
    assert canary.inputs["metricName"] == "Availability"
    assert canary.inputs["dimensions"] == {"Stack": "free-tier", "Probe": "read"}
    # a canary that fails or stops running publishes nothing: that counts as down
    assert canary.inputs["treatMissingData"] == "breaching"
    assert canary.inputs["period"] == 300  # the schedule's rate
    assert not [a for a in alarms if a.inputs.get("namespace") in ("AWS/Lambda", "AWS/SQS")]


def test_the_canarys_schedule_comes_from_config(backbone_cli, tmp_path):
    path = free_tier_file(tmp_path, functions={"canarySchedule": "rate(15 minutes)"})
    result = backbone_cli("plan", str(path), "-f", "json")
    assert result.returncode == 0, result.stderr
    resources = json.loads(result.stdout)["resources"]
    (rule,) = [r for r in resources if r["type"] == "aws:cloudwatch/eventRule:EventRule"]
    assert rule["inputs"]["scheduleExpression"] == "rate(15 minutes)"
    (alarm,) = [
        r
        for r in resources
        if r["type"] == ALARM and r["inputs"].get("namespace") == "Backbone/Canary"
    ]
    assert alarm["inputs"]["period"] == 900


def test_the_canary_stays_inside_the_always_free_allowances(backbone_cli):
    result = backbone_cli("cost", "free-tier", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["totalUsd"] == 0.00
    canary = [x for x in report["lines"] if x["resource"] == "functions-canary"]
    by_item = {x["item"]: x["quantity"] for x in canary}
    # by hand: rate(5 minutes) = 12 runs an hour x 730 hours = 8,760 a month; 256 MB x 2 s each
    assert by_item["lambda/requests"] == 8760 <= 1_000_000
    assert by_item["lambda/duration/arm64"] == pytest.approx(8760 * 0.25 * 2)  # of 400,000
    # Availability and Latency of health, read and the known link's redirect
    assert by_item["cloudwatch/custom-metric"] == 6 <= 10
    alarm_metrics = sum(
        x["quantity"] for x in report["lines"] if x["item"] == "cloudwatch/alarm-metric"
    )
    assert alarm_metrics == 10


def test_the_job_on_a_free_stack_is_refused_for_its_nat(backbone_cli, tmp_path):
    path = free_tier_file(tmp_path, functions={"housekeeping": True})
    result = backbone_cli("plan", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "backbone:network.nat: 'none' leaves the housekeeping job" in result.stderr
    assert "or functions.housekeeping: false (the canary only)" in result.stderr


def _dashboard(plan):
    board = json.loads(plan.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    headings = [w["properties"]["markdown"] for w in board["widgets"] if w["type"] == "text"]
    graphs = {
        w["properties"]["title"]: w["properties"] for w in board["widgets"] if w["type"] == "metric"
    }
    return headings, graphs


def test_the_dashboard_shows_what_the_free_stack_has(plan_of):
    plan = plan_of("free-tier")
    headings, graphs = _dashboard(plan)
    # no cluster here: no heading about the cluster's app; the functions' failures queue is real
    assert headings == [
        "## The app, as a user sees it (canary)",
        "## Database",
        "## Functions",
        "## The functions' failures queue",
    ]
    # the canary row: each of the three probes it publishes, the redirect of the known link too
    for title in ("Availability (1 = up)", "Latency (ms)"):
        probes = [line[5] for line in graphs[title]["metrics"]]
        assert probes == ["health", "read", "redirect"], title


def test_the_canary_alarms_runbook_names_what_the_free_stack_has(plan_of):
    plan = plan_of("free-tier")
    (alarm,) = [a for a in plan.of_type(ALARM) if a.inputs.get("namespace") == "Backbone/Canary"]
    text = alarm.inputs["alarmDescription"]
    # no load balancer: no 5xx or unhealthy-hosts alarm to look at, the host's own alarms instead
    assert "5xx" not in text and "unhealthy" not in text and "load balancer" not in text
    names = {a.inputs["name"] for a in plan.of_type(ALARM)}
    assert {"backbone-free-tier-host-reboot", "backbone-free-tier-host-recover"} <= names
    assert "host-reboot, host-recover" in text and "docker logs" in text
    # the canary's own log group and the query for its failed probes
    fn = plan.one(LAMBDA).inputs["name"]
    assert f"CloudWatch Logs group /aws/lambda/{fn}; Logs Insights: fields @timestamp" in text
    assert '/"event": "probe"/' in text
