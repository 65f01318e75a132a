"""Typed, validated stack configuration: the only code that reads stack settings. Pulumi-free.

A stack file (``stacks/Pulumi.<stack>.yaml``) holds keys in the ``backbone:`` namespace plus
``aws:region``. Under ``pulumi up`` the engine hands the program those keys as strings (objects as
JSON); the offline engine (``backbone.synth``) hands them over in exactly the same form. Either way
:func:`parse` turns them into one :class:`StackConfig` or raises :class:`ConfigError` listing every
problem at once. Every setting is documented once, with its default, in its section's module;
``docs()`` renders that documentation.

The house (one module per concern):
  base.py           NAMESPACE, Problem, the Section base class (each section checks itself)
  catalogues.py     dated AWS and Kubernetes facts, each with its source and date
  schedules.py      EventBridge schedules and RDS windows, parsed once
  capacity.py       how many app pods a node group holds (the capacity rule's arithmetic)
  network.py registry.py cluster.py database.py loadbalancer.py app.py functions.py
  monitoring.py observability.py host.py local.py policies.py
                    one section each: its fields, defaults, meanings and own rules
  stack.py          StackConfig: every section, and the rules across sections
  loader.py         parse(), ConfigError, pydantic's errors in the config's words, engine settings
  docs.py           the settings table (`backbone settings`, README)
"""

from infra.config import capacity, catalogues
from infra.config.app import CANARY_LINK_CODE, AppConfig
from infra.config.base import NAMESPACE, Problem, Section
from infra.config.catalogues import (
    AWS_REGIONS,
    LAMBDA_NAME_MAX,
    LAMBDA_PYTHON_RUNTIMES,
    LOG_RETENTION_DAYS,
    POSTGRES_MAJORS,
    RDS_CA_MISSING_REGIONS,
    RDS_CLASSES,
)
from infra.config.cluster import ClusterConfig
from infra.config.database import DB_APP_ROLE, DB_JOB_ROLE, DB_ROLES, DatabaseConfig
from infra.config.docs import docs
from infra.config.functions import FUNCTION_NAMES, FunctionsConfig
from infra.config.host import HostConfig
from infra.config.loadbalancer import LoadBalancerConfig
from infra.config.loader import (
    ENGINE_NAMESPACE,
    PACKAGER_CHOICES,
    PACKAGER_KEY,
    PROVIDER_NAMESPACES,
    ConfigError,
    packager,
    parse,
)
from infra.config.local import LocalConfig
from infra.config.monitoring import MonitoringConfig
from infra.config.network import NetworkConfig
from infra.config.observability import ObservabilityConfig
from infra.config.policies import POLICY_RULES
from infra.config.registry import RegistryConfig
from infra.config.schedules import Schedule, rate_seconds, schedule, schedule_problem
from infra.config.stack import StackConfig

__all__ = [
    "AWS_REGIONS",
    "CANARY_LINK_CODE",
    "DB_APP_ROLE",
    "DB_JOB_ROLE",
    "DB_ROLES",
    "ENGINE_NAMESPACE",
    "FUNCTION_NAMES",
    "LAMBDA_NAME_MAX",
    "LAMBDA_PYTHON_RUNTIMES",
    "LOG_RETENTION_DAYS",
    "NAMESPACE",
    "PACKAGER_CHOICES",
    "PACKAGER_KEY",
    "POLICY_RULES",
    "POSTGRES_MAJORS",
    "PROVIDER_NAMESPACES",
    "RDS_CA_MISSING_REGIONS",
    "RDS_CLASSES",
    "AppConfig",
    "ClusterConfig",
    "ConfigError",
    "DatabaseConfig",
    "FunctionsConfig",
    "HostConfig",
    "LoadBalancerConfig",
    "LocalConfig",
    "MonitoringConfig",
    "NetworkConfig",
    "ObservabilityConfig",
    "Problem",
    "RegistryConfig",
    "Schedule",
    "Section",
    "StackConfig",
    "capacity",
    "catalogues",
    "docs",
    "packager",
    "parse",
    "rate_seconds",
    "schedule",
    "schedule_problem",
]
