"""The host: the app on one EC2 instance, as a container (the free-tier stack's way to run it).

- Amazon Linux 2023 for x86_64, its AMI read at deploy time from AWS's public SSM parameter (never
  a hard-coded id): a `pulumi up` after AWS publishes a new AMI replaces the host with it.
- IMDSv2 only, with a hop limit of 1, so the containers cannot reach the instance's credentials;
  an encrypted gp3 root volume; T-family CPU credits `standard` (never billed surplus credits);
  detailed monitoring off (it bills per metric).
- No SSH: no key pair and no port 22. A shell comes through Session Manager
  (`aws ssm start-session --target <instanceId>`), with the instance profile's five Session
  Manager actions. The same role may pull from the stack's one ECR repository and read the stack's
  one Parameter Store value, and nothing else.
- The containers' secret environment (the database URLs and passwords, the API token) is one SSM
  Parameter Store SecureString encrypted with the AWS managed key `aws/ssm` (free; no Secrets
  Manager secret, no customer key), read by the user data at boot into root-only files on tmpfs.
- User data (`user_data`): installs Docker, pulls the image by digest, runs the migration, then
  the app with a restart policy and the pods' hardening (UID 10001, read-only root, no
  capabilities, no new privileges), published on port 80. A new digest changes the user data,
  which replaces the instance (`user_data_replace_on_change`): that is how the app rolls.
- An Elastic IP keeps the address (and the URL) across replacements. Behind the stack's load
  balancer (`attach`), the host takes port 80 from the load balancer only.
- Two alarms heal the host (2 of the 10 free alarm metrics; EC2 publishes its status checks every
  minute at no charge): a failed system check recovers the instance onto other hardware (same
  id, address and volume), a failed instance check reboots it; Docker then restarts the app.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.components import APP_UID, project_stack, sg
from infra.components.iam import document, trust
from infra.config import HostConfig

# AWS's public parameter naming the newest Amazon Linux 2023 AMI (x86_64, default kernel).
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
HTTP_PORT = 80
"""Where the host serves the app (the container's APP_PORT published here)."""
APP_PORT = 8000
DB_PORT = 5432
# Session Manager's instance permissions (AWS Systems Manager user guide, "Verify or add instance
# permissions for Session Manager"): what AmazonSSMManagedInstanceCore grants for sessions,
# without its Parameter Store, documents and inventory actions on every resource.
SESSION_MANAGER_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
ECR_PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)
# The app's non-secret settings on the host (the pods' ConfigMap, infra/components/workload.py).
APP_SETTINGS = {
    "HOST": "0.0.0.0",
    "PORT": str(APP_PORT),
    "LOG_LEVEL": "INFO",
    "MIGRATE_ON_STARTUP": "false",
    "SHUTDOWN_TIMEOUT_SECONDS": "20",
    "STARTUP_DB_TIMEOUT_SECONDS": "60",
}
MIGRATION_COMMAND = ("python", "-m", "shortener.migrate")


@dataclass(frozen=True)
class Boot:
    """What the user data needs, all known at deploy time and none of it secret."""

    region: str
    image: str
    """The app's image by digest (`<repository>@sha256:...`)."""
    parameter: str
    """The SSM parameter holding {"app": {...}, "migration": {...}} (environment variables)."""
    settings: Mapping[str, str] = field(default_factory=lambda: dict(APP_SETTINGS))
    migration_settings: Mapping[str, str] = field(default_factory=dict)
    """Non-secret variables for the migration container only (the canary's known link:
    CANARY_LINK_CODE and CANARY_LINK_URL, as the cluster's migration gets them)."""
    http_port: int = HTTP_PORT
    state_dir: str = "/run/backbone"
    """Where the environment files go: tmpfs, root-only."""
    name: str = "backbone-app"
    """The app container's name (the migration's is `<name>-migrate`)."""


_SCRIPT = r"""
log() { echo "backbone-host: $*"; }

# 1. the container runtime
if ! command -v docker >/dev/null 2>&1; then
  log "installing docker"
  dnf install -y -q docker
fi
systemctl enable --now docker

# 2. the image, by digest, with the instance role's ECR token
aws ecr get-login-password --region "$REGION" |
  docker login --username AWS --password-stdin "${IMAGE%%/*}"
docker pull "$IMAGE"

# 3. the secret environment, from Parameter Store (decrypted with aws/ssm), root-only on tmpfs
umask 077
install -d -m 700 "$STATE"
aws ssm get-parameter --region "$REGION" --name "$PARAMETER" --with-decryption \
  --query Parameter.Value --output text >"$STATE/env.json"
python3 - "$STATE" <<'PY'
import json, pathlib, sys

state = pathlib.Path(sys.argv[1])
values = json.loads((state / "env.json").read_text())
for part in ("app", "migration"):
    lines = []
    for key, value in values[part].items():
        if "\n" in value or "=" in key:
            sys.exit(f"backbone-host: {part} variable {key} cannot go in an env file")
        lines.append(f"{key}={value}\n")
    (state / f"{part}.env").write_text("".join(lines))
PY
rm -f "$STATE/env.json"

# 4. the migration first (idempotent); a few tries while the database comes up
for attempt in 1 2 3 4 5 6; do
  if docker run --rm --name "$NAME-migrate" "${HARDENING[@]}" "${SETTINGS[@]}" \
    "${MIGRATION_SETTINGS[@]}" --env-file "$STATE/migration.env" "$IMAGE" "${MIGRATE[@]}"; then
    break
  fi
  if [ "$attempt" = 6 ]; then
    log "the migration failed 6 times; the app is not started"
    exit 1
  fi
  sleep 10
done

# 5. the app, restarted by Docker when it stops and when the host reboots
docker rm -f "$NAME" >/dev/null 2>&1 || true
docker run -d --name "$NAME" --restart unless-stopped "${HARDENING[@]}" "${SETTINGS[@]}" \
  --env-file "$STATE/app.env" -p "$HTTP_PORT:$APP_PORT" \
  --log-opt max-size=10m --log-opt max-file=3 "$IMAGE"
log "the app runs: $IMAGE on port $HTTP_PORT"
"""


def user_data(boot: Boot) -> str:
    """The host's boot script (cloud-init runs it once, as root, at first boot)."""
    q = shlex.quote
    hardening = (
        f"--user {APP_UID}:{APP_UID} --read-only --tmpfs /tmp:rw,noexec,nosuid,size=64m "
        "--cap-drop ALL --security-opt no-new-privileges"
    )
    settings = " ".join(f"-e {q(f'{k}={v}')}" for k, v in sorted(boot.settings.items()))
    migration = " ".join(f"-e {q(f'{k}={v}')}" for k, v in sorted(boot.migration_settings.items()))
    header = [
        "#!/bin/bash",
        "# backbone host: the app on this instance (EC2 user data; infra/components/host.py)",
        "set -euo pipefail",
        f"REGION={q(boot.region)}",
        f"IMAGE={q(boot.image)}",
        f"PARAMETER={q(boot.parameter)}",
        f"STATE={q(boot.state_dir)}",
        f"NAME={q(boot.name)}",
        f"HTTP_PORT={boot.http_port}",
        f"APP_PORT={APP_PORT}",
        f"MIGRATE=({' '.join(map(q, MIGRATION_COMMAND))})",
        f"HARDENING=({hardening})",
        f"SETTINGS=({settings})",
        f"MIGRATION_SETTINGS=({migration})",
    ]
    return "\n".join(header) + "\n" + _SCRIPT.lstrip("\n")


def check_digest(image: str) -> str:
    """The host pulls by digest only: a tag could change under a running stack."""
    name, _, digest = image.partition("@sha256:")
    if not name or len(digest) != 64:
        raise ValueError(
            f"the host's image must be pinned by digest (repo@sha256:...), not {image!r}"
        )
    return image


@dataclass(frozen=True)
class Identity:
    role: aws.iam.Role
    profile: aws.iam.InstanceProfile


class Host(pulumi.ComponentResource):
    """`cfg` is the host section. Wiring: the VPC and one public subnet, the stack's ECR
    repository (its ARN) and the image by digest, the containers' secret environment (`app`
    and `migration` maps) and the database's security group (the host's only egress besides
    HTTPS). `public`: take port 80 from the internet (false when a load balancer fronts it)."""

    def __init__(
        self,
        name: str,
        cfg: HostConfig,
        *,
        region: str,
        vpc_id: pulumi.Input[str],
        subnet_id: pulumi.Input[str],
        repository_arn: pulumi.Input[str],
        image: pulumi.Input[str],
        app_env: Mapping[str, pulumi.Input[str]],
        migration_env: Mapping[str, pulumi.Input[str]],
        database_security_group_id: pulumi.Input[str],
        settings: Mapping[str, str] | None = None,
        migration_settings: Mapping[str, str] | None = None,
        public: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("backbone:host:Host", name, None, opts)
        self._name = name
        self._child = pulumi.ResourceOptions(parent=self)
        self.parameter = self._parameter(app_env, migration_env)
        self.security_group = self._security_group(vpc_id, database_security_group_id, public)
        identity = self._identity(repository_arn)
        boot = pulumi.Output.all(image, self.parameter.name).apply(
            lambda a: user_data(
                Boot(
                    region=region,
                    image=check_digest(a[0]),
                    parameter=a[1],
                    settings={**APP_SETTINGS, **(settings or {})},
                    migration_settings=dict(migration_settings or {}),
                )
            )
        )
        self.instance = self._instance(cfg, subnet_id, identity, boot)
        self._region = region
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        self.address = aws.ec2.Eip(
            f"{name}-ip", domain="vpc", instance=self.instance.id, opts=self._child
        )
        self.public_ip = self.address.public_ip
        self.url = pulumi.Output.concat("http://", self.address.public_ip)
        self.register_outputs(
            {"instanceId": self.instance.id, "url": self.url, "parameter": self.parameter.name}
        )

    def _parameter(
        self,
        app_env: Mapping[str, pulumi.Input[str]],
        migration_env: Mapping[str, pulumi.Input[str]],
    ) -> aws.ssm.Parameter:
        """One SecureString (standard tier: free), encrypted with the AWS managed key aws/ssm
        (no key_id: a customer key would cost $1/month)."""
        value: pulumi.Output[str] = pulumi.Output.all(dict(app_env), dict(migration_env)).apply(
            lambda a: json.dumps({"app": a[0], "migration": a[1]}, sort_keys=True)
        )
        secret: pulumi.Output[str] = pulumi.Output.secret(value)
        return aws.ssm.Parameter(
            f"{self._name}-env",
            name=f"/{project_stack()}/host/env",
            description="the host's container environment (secret): database URLs, API token",
            type="SecureString",
            tier="Standard",
            value=secret,
            opts=self._child,
        )

    def _security_group(
        self, vpc_id: pulumi.Input[str], database_sg: pulumi.Input[str], public: bool
    ) -> aws.ec2.SecurityGroup:
        name, child = self._name, self._child
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description="the app host: HTTP in; HTTPS and PostgreSQL out; no SSH",
            opts=child,
        )
        if public:
            sg.allow_in(
                f"{name}-http-in",
                group.id,
                HTTP_PORT,
                "HTTP from the internet to the app",
                cidr="0.0.0.0/0",
                opts=child,
            )
        sg.allow_out(
            f"{name}-https-out",
            group.id,
            443,
            "HTTPS to ECR, S3, Systems Manager and the package repositories",
            cidr="0.0.0.0/0",
            opts=child,
        )
        sg.allow_out(
            f"{name}-db-out",
            group.id,
            DB_PORT,
            "PostgreSQL to the database",
            peer=database_sg,
            opts=child,
        )
        return group

    def _identity(self, repository_arn: pulumi.Input[str]) -> Identity:
        name, child = self._name, self._child
        role = aws.iam.Role(
            f"{name}-role",
            description="the app host: Session Manager, pull from its ECR repository, read its "
            "parameter",
            assume_role_policy=trust("ec2.amazonaws.com"),
            opts=child,
        )
        policy = pulumi.Output.all(repository_arn, self.parameter.arn).apply(
            lambda a: document(
                [
                    {"Effect": "Allow", "Action": list(SESSION_MANAGER_ACTIONS), "Resource": "*"},
                    # GetAuthorizationToken takes no resource (ECR API reference).
                    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                    {"Effect": "Allow", "Action": list(ECR_PULL_ACTIONS), "Resource": a[0]},
                    # aws/ssm's key policy lets SSM decrypt for the account: no kms grant here.
                    {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": a[1]},
                ]
            )
        )
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=policy, opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, opts=child)
        return Identity(role, profile)

    def _instance(
        self,
        cfg: HostConfig,
        subnet_id: pulumi.Input[str],
        identity: Identity,
        boot: pulumi.Output[str],
    ) -> aws.ec2.Instance:
        ami = aws.ssm.get_parameter_output(
            name=AMI_PARAMETER, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return aws.ec2.Instance(
            f"{self._name}-instance",
            ami=ami.value,
            instance_type=cfg.instance_type,
            subnet_id=subnet_id,
            vpc_security_group_ids=[self.security_group.id],
            iam_instance_profile=identity.profile.name,
            associate_public_ip_address=True,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_size=cfg.root_volume_gb,
                volume_type="gp3",
                encrypted=True,
                delete_on_termination=True,
            ),
            credit_specification=aws.ec2.InstanceCreditSpecificationArgs(cpu_credits="standard"),
            monitoring=False,
            user_data=boot,
            user_data_replace_on_change=True,
            tags={"Name": project_stack()},
            opts=self._child,
        )

    def heal(self, topic_arn: pulumi.Input[str] | None = None) -> list[aws.cloudwatch.MetricAlarm]:
        """EC2's own actions on its status checks: recover (system), reboot (instance); the
        alerts topic, when the stack has one, is told as well."""
        tell = [topic_arn] if topic_arn is not None else []
        for check, action, what in (
            ("System", "recover", "recover the host onto healthy hardware"),
            ("Instance", "reboot", "reboot the host"),
        ):
            self.alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{self._name}-{action}",
                    name=f"{project_stack()}-host-{action}",
                    alarm_description=f"StatusCheckFailed_{check} for 2 minutes: {what}",
                    namespace="AWS/EC2",
                    metric_name=f"StatusCheckFailed_{check}",
                    dimensions={"InstanceId": self.instance.id},
                    statistic="Maximum",
                    period=60,
                    evaluation_periods=2,
                    threshold=1,
                    comparison_operator="GreaterThanOrEqualToThreshold",
                    treat_missing_data="missing",
                    alarm_actions=[f"arn:aws:automate:{self._region}:ec2:{action}", *tell],
                    ok_actions=tell or None,
                    opts=self._child,
                )
            )
        return self.alarms

    def attach(self, target_group_arn: pulumi.Input[str]) -> aws.lb.TargetGroupAttachment:
        """Register the host in a load balancer's target group (on HTTP_PORT)."""
        return aws.lb.TargetGroupAttachment(
            f"{self._name}-target",
            target_group_arn=target_group_arn,
            target_id=self.instance.id,
            port=HTTP_PORT,
            opts=self._child,
        )
