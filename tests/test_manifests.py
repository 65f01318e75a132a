"""`backbone manifests`: the stack's Kubernetes objects as YAML, checked by the real tools.

- every rendered object validates against the upstream schema of the cluster's Kubernetes version
  (kubernetes-validate, strict: unknown fields are errors);
- checkov's Kubernetes checks pass with no failure; each skip carries its reason in the manifest;
- the command end to end: files in apply order, Secret values never written, exit 2 and a clear
  message for a stack without Kubernetes objects or a folder that cannot be written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

from backbone import cache
from backbone.manifests import REDACTED, render, stream, write
from backbone.plan import SECRET, Plan, Resource
from backbone.synth import load_config, resolve
from tests import checkov_cache, k8s_schemas
from tests import workload_harness as H
from tests.realparts import REPO

k8s_schemas.install()  # its schema files parsed once per process (tests/k8s_schemas.py)

APPLY_ORDER = [
    "01-namespace-shortener.yaml",
    "02-networkpolicy-default-deny.yaml",
    "03-networkpolicy-shortener-migrate.yaml",
    "04-networkpolicy-shortener.yaml",
    "05-poddisruptionbudget-shortener.yaml",
    "06-serviceaccount-shortener-migrate.yaml",
    "07-serviceaccount-shortener.yaml",
    "08-secret-shortener-secrets.yaml",
    "09-configmap-shortener-config.yaml",
    "10-service-shortener.yaml",
    # the migration's Job, named by a hash of what it runs (tests/test_workload.py), before the
    # Deployment that waits for it
    "11-job-shortener-migrate-HASH.yaml",
    "12-deployment-shortener.yaml",
    "13-horizontalpodautoscaler-shortener.yaml",
]
_JOB_HASH = re.compile(r"(job-shortener-migrate-)[0-9a-f]{10}(\.yaml)$")


def _names(paths: Any) -> list[str]:
    """File names (or paths) with the migration Job's hash replaced by HASH."""
    return [_JOB_HASH.sub(r"\1HASH\2", str(getattr(p, "name", p))) for p in paths]


# checkov findings we accept, each with its reason written on the object (checkov.io/skipN).
ACCEPTED_SKIPS = {"CKV_K8S_35"}
# ...and on the node autoscaler's Deployment only: its image by release tag (tests/test_cluster.py).
AUTOSCALER = "cluster-autoscaler"
AUTOSCALER_SKIPS = {"CKV_K8S_43"}


def schema_version(cluster: str) -> str:
    """The kubernetes-validate schema set for a cluster's minor version.

    The installed kubernetes-validate (1.37.0) ships schemas for 1.33 to 1.37, so every version
    EKS offers under standard support (infra.config.cluster.standard_versions(): 1.34, 1.35,
    1.36) maps to its own schemas exactly: no approximation. A version outside the shipped range is an error, never
    validated against another version's schemas; a gap inside the range (none today) would take
    the newest schemas not newer than the cluster, as kubernetes_validate.validate does itself
    (but compared as versions, not as strings).
    """
    have = sorted({kv_utils.major_minor(v) for v in kv_utils.all_versions()}, key=Version)
    if cluster in have:
        return cluster
    if not Version(have[0]) <= Version(cluster) <= Version(have[-1]):
        pytest.fail(
            f"kubernetes-validate {kubernetes_validate.version.__version__} has no schemas for "
            f"Kubernetes {cluster} (it has {have[0]} to {have[-1]}); upgrade it"
        )
    return [v for v in have if Version(v) <= Version(cluster)][-1]


@pytest.fixture(scope="module")
def harness_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The harness project, read (never written) by this module's tests and commands."""
    return H.make_project(tmp_path_factory.mktemp("manifests-harness"))


@pytest.fixture(scope="module")
def harness_plan(harness_project: Path) -> Plan:
    # through the kit's Plan cache, as `backbone manifests` plans: the commands below that render
    # the same stack read this Plan instead of running the program again
    return cache.plan(resolve(str(harness_project / "stacks" / "Pulumi.providers.yaml")))[0]


@pytest.fixture(scope="module")
def written(harness_plan: Plan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("manifests")
    write(harness_plan, out)
    return out


def _objects(folder: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


# ------------------------------------------------------------------------------------------------
# Rendering


def test_files_in_apply_order(written: Path) -> None:
    assert sorted(_names(written.iterdir())) == APPLY_ORDER


def test_objects_are_the_plan_inputs(harness_plan: Plan, written: Path) -> None:
    by_kind_name = {
        (r.inputs["kind"], r.inputs["metadata"]["name"]): r.inputs
        for r in harness_plan
        if r.package == "kubernetes" and not r.is_provider
    }
    for obj in _objects(written):
        key = (obj["kind"], obj["metadata"]["name"])
        assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]
        if obj["kind"] != "Secret":
            assert obj == by_kind_name[key]


def test_secret_values_redacted(written: Path) -> None:
    secret = yaml.safe_load((written / "08-secret-shortener-secrets.yaml").read_text())
    # The plan masked stringData as a whole; its keys come from the annotation.
    assert secret["stringData"] == {"API_TOKEN": REDACTED, "DATABASE_URL": REDACTED}
    text = "".join(p.read_text() for p in written.iterdir())
    for value in (H.DATABASE_URL, H.API_TOKEN, "Harness-Db-Pa55word", "postgresql://"):
        assert value not in text


def test_secret_values_redacted_even_when_the_plan_did_not_mask_them() -> None:
    """A Secret whose values reached the plan in clear (someone forgot Output.secret)."""
    leaked = "plain-text-password-123"
    plan = Plan(
        "t",
        "backbone",
        [
            Resource(
                urn="urn:pulumi:t::backbone::kubernetes:core/v1:Secret::s",
                type="kubernetes:core/v1:Secret",
                name="s",
                custom=True,
                inputs={
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s", "namespace": "n"},
                    "data": {"password": "cGxhaW4=", "user": "YWRtaW4="},
                    "stringData": {"token": leaked, "masked": SECRET},
                },
            )
        ],
    )
    (m,) = render(plan)
    assert m.obj["data"] == {"password": REDACTED, "user": REDACTED}
    assert m.obj["stringData"] == {"token": REDACTED, "masked": REDACTED}
    assert leaked not in stream(plan, [m]) and "cGxhaW4=" not in stream(plan, [m])
    # and the plan itself is left untouched
    assert plan.resources[0].inputs["stringData"]["token"] == leaked


def test_helm_releases_and_providers_are_not_objects() -> None:
    plan = Plan(
        "t",
        "backbone",
        [
            Resource("urn:p", "pulumi:providers:kubernetes", "k8s", True, inputs={"kind": "x"}),
            Resource(
                "urn:h",
                "kubernetes:helm.sh/v3:Release",
                "h",
                True,
                inputs={"chart": "x", "namespace": "n"},
            ),
        ],
    )
    assert render(plan) == []


# ------------------------------------------------------------------------------------------------
# The real tools


def test_schema_version_mapping() -> None:
    for v in ("1.34", "1.35", "1.36"):
        assert schema_version(v) == v
    for outside in ("1.20", "1.99"):
        with pytest.raises(pytest.fail.Exception, match="no schemas"):
            schema_version(outside)


@pytest.fixture(scope="module", params=["harness", "dev", "prod"])
def rendered(
    request: pytest.FixtureRequest,
    written: Path,
    plan_of: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str]:
    """(folder of written manifests, the cluster's Kubernetes version) per source."""
    if request.param == "harness":
        return written, H.K8S_VERSION
    plan = plan_of(request.param)
    out = tmp_path_factory.mktemp(f"manifests-{request.param}")
    write(plan, out)
    return out, load_config(resolve(plan.stack, REPO)).cluster.version


def test_objects_validate_strictly_against_the_cluster_schema(rendered: tuple[Path, str]) -> None:
    folder, cluster = rendered
    version = schema_version(cluster)
    objects = _objects(folder)
    # dev and prod also hold the monitoring component's Prometheus rules ConfigMap.
    rules = [o for o in objects if o["metadata"]["name"] == "backbone-prometheus-rules"]
    # ...and the migration's own Secret (the master user's URL, the roles it creates).
    migration = [o for o in objects if o["metadata"]["name"] == "shortener-migration"]
    # ...and the managed Prometheus collector's ClusterRole and its binding (observability).
    collector = [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # ...and the cluster's node autoscaler (its seven objects, tests/test_cluster.py),
    # less its ClusterRole and binding, counted above.
    scaler = [o for o in objects if o["metadata"]["name"] == AUTOSCALER and o not in collector]
    assert len(scaler) in (0, 5)
    counted = len(objects) - len(rules) - len(migration) - len(collector)
    assert counted - len(scaler) == len(APPLY_ORDER)
    for obj in objects:
        got = kubernetes_validate.validate(obj, version, strict=True)
        assert got == version, (obj["kind"], got)


@pytest.mark.parametrize("cluster", ["1.34", "1.36"])
def test_objects_validate_on_every_supported_eks_version(written: Path, cluster: str) -> None:
    for obj in _objects(written):
        kubernetes_validate.validate(obj, schema_version(cluster), strict=True)


def test_strict_validation_catches_an_unknown_field(written: Path) -> None:
    """A control: strict mode really refuses what the API server would drop or refuse."""
    deployment = yaml.safe_load((written / "12-deployment-shortener.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, schema_version(H.K8S_VERSION), strict=True)


SOURCES = ("harness", "dev", "prod")


@pytest.fixture(scope="module")
def checkov_results(
    written: Path, plan_of: Any, tmp_path_factory: pytest.TempPathFactory, checkov: str
) -> dict[str, list[dict[str, Any]]]:
    """checkov's results over the manifests of every source, in one scan (checkov's start is
    shared by the run's scans, tests/checkov_cache.py): each source in a folder of its own, its
    checks told apart by their file's path."""
    root = tmp_path_factory.mktemp("manifests-checkov")
    shutil.copytree(written, root / "harness")
    for stack in ("dev", "prod"):
        (root / stack).mkdir()
        write(plan_of(stack), root / stack)
    done = subprocess.run(
        [checkov, "-d", str(root), "--framework", "kubernetes", "--compact", "-o", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, **checkov_cache.ENV},
    )  # fmt: skip
    results = json.loads(done.stdout)["results"]
    return results  # type: ignore[no-any-return]


def _of(results: dict[str, list[dict[str, Any]]], kind: str, source: str) -> list[dict[str, Any]]:
    checks = results.get(kind) or []
    assert all(c["file_path"].split("/")[1] in SOURCES for c in checks), "a file of no source"
    return [c for c in checks if c["file_path"].split("/")[1] == source]


@pytest.mark.realpart
@pytest.mark.parametrize("source", SOURCES)
def test_checkov_kubernetes_checks_pass(
    checkov_results: dict[str, list[dict[str, Any]]], source: str
) -> None:
    failed = [
        (c["check_id"], c["check_name"], c["resource"])
        for c in _of(checkov_results, "failed_checks", source)
    ]
    assert not failed, failed
    passed = _of(checkov_results, "passed_checks", source)
    assert len(passed) >= 80, len(passed)
    skipped = {
        c["check_id"]: c["check_result"].get("suppress_comment")
        for c in _of(checkov_results, "skipped_checks", source)
        if not (c["check_id"] in AUTOSCALER_SKIPS and AUTOSCALER in c["resource"])
    }
    assert set(skipped) <= ACCEPTED_SKIPS, skipped
    assert all(reason and len(reason) > 20 for reason in skipped.values()), skipped


# ------------------------------------------------------------------------------------------------
# The command


def test_cli_writes_the_files(backbone_cli: Any, harness_project: Path, tmp_path: Path) -> None:
    project = harness_project
    out = tmp_path / "out" / "dev"
    done = backbone_cli(
        "manifests", str(project / "stacks" / "Pulumi.providers.yaml"), "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert sorted(_names(out.iterdir())) == APPLY_ORDER
    assert _names(done.stdout.split()) == [str(out / name) for name in APPLY_ORDER]
    assert "13 objects" in done.stderr
    # No secret value anywhere in the folder; the only placeholders are the redacted ones.
    text = "".join(p.read_text() for p in out.iterdir())
    for value in (H.DATABASE_URL, H.API_TOKEN, "Harness-Db-Pa55word"):
        assert value not in text and value not in done.stdout + done.stderr
    assert text.count(REDACTED) - text.count(f"are {REDACTED}") == 2
    assert f": '{SECRET}'" not in text
    # A second run over the same folder is a no-op (same bytes, no stale files).
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = backbone_cli(
        "manifests", str(project / "stacks" / "Pulumi.providers.yaml"), "-o", str(out)
    )
    assert again.returncode == 0 and "stale" not in again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_dev_stack(backbone_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "dev"
    done = backbone_cli("manifests", "dev", "-o", str(out))
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    # the workload's objects and the monitoring component's Prometheus rules
    # + the rules ConfigMap, the migration's Secret, the collector's ClusterRole and binding
    # ...and the node autoscaler's seven objects (tests/test_cluster.py)
    scaler = [f for f in files if f.endswith(f"-{AUTOSCALER}.yaml")]
    assert len(scaler) == 7
    assert len(files) - len(scaler) == len(APPLY_ORDER) + 4 and files[0].startswith("01-namespace-")
    assert any(f.endswith("-configmap-backbone-prometheus-rules.yaml") for f in files)
    text = "".join(p.read_text() for p in out.iterdir())
    # The database URL and the API token exist only as Secret keys, their values redacted.
    assert "postgresql://" not in text and "sslmode" not in text
    assert f": '{SECRET}'" not in text
    secret = yaml.safe_load(next(out.glob("*-secret-shortener-secrets.yaml")).read_text())
    assert secret["stringData"] == {"API_TOKEN": REDACTED, "DATABASE_URL": REDACTED}
    migration = yaml.safe_load(next(out.glob("*-secret-shortener-migration.yaml")).read_text())
    assert set(migration["stringData"].values()) == {REDACTED}
    # the roles' passwords are no longer here: the migration reads them from their secrets
    assert set(migration["stringData"]) == {"DATABASE_URL", "APP_DB_USER", "JOB_DB_USER"}


def test_cli_stream_to_stdout(backbone_cli: Any, harness_project: Path, tmp_path: Path) -> None:
    project = harness_project
    done = backbone_cli("manifests", str(project / "stacks" / "Pulumi.provider.yaml"), "-o", "-")
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert [d["kind"] for d in docs][:2] == ["Namespace", "NetworkPolicy"]
    assert len(docs) == len(APPLY_ORDER)
    assert H.API_TOKEN not in done.stdout


@pytest.mark.parametrize("stack", ["local", "free-tier"])
def test_cli_refuses_a_stack_without_kubernetes(
    backbone_cli: Any, tmp_path: Path, stack: str
) -> None:
    done = backbone_cli("manifests", stack, "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"stack '{stack}' has no Kubernetes objects, nothing to write" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_folder_it_cannot_write(
    backbone_cli: Any, harness_project: Path, tmp_path: Path
) -> None:
    project = harness_project
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = backbone_cli(
        "manifests", str(project / "stacks" / "Pulumi.providers.yaml"), "-o", str(blocker / "x")
    )
    assert done.returncode == 2
    assert "cannot create" in done.stderr and str(blocker / "x") in done.stderr
    assert "Traceback" not in done.stderr
    done = backbone_cli(
        "manifests", str(project / "stacks" / "Pulumi.providers.yaml"), "-o", str(blocker)
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_cli_names_stale_files_and_leaves_them(
    backbone_cli: Any, harness_project: Path, tmp_path: Path
) -> None:
    project = harness_project
    out = tmp_path / "out"
    out.mkdir()
    (out / "11-deployment-old.yaml").write_text("kind: Deployment\n")
    (out / "kustomization.yaml").write_text("resources: []\n")
    done = backbone_cli(
        "manifests", str(project / "stacks" / "Pulumi.providers.yaml"), "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "stale: 11-deployment-old.yaml" in done.stderr
    assert "kustomization" not in done.stderr
    assert (out / "11-deployment-old.yaml").exists() and (out / "kustomization.yaml").exists()


def test_cli_help_has_an_example(backbone_cli: Any) -> None:
    done = backbone_cli("manifests", "--help")
    assert done.returncode == 0
    assert "backbone manifests dev -o" in done.stdout
    assert "--output" in done.stdout
