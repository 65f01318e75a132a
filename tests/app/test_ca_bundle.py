"""The RDS CA bundle that the image and the housekeeping Lambda verify the database against.

It must be what app/certs/README.md says it is: Amazon RDS's G1 root CAs, parseable, self-signed,
valid today, covering the regions our stacks deploy to, and the same bytes in both places."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "app" / "certs" / "rds-global-bundle.pem"
JOB_BUNDLE = REPO / "app" / "functions" / "housekeeping" / "certs" / "rds-global-bundle.pem"
README = REPO / "app" / "certs" / "README.md"
SUBJECT = re.compile(
    r"^Amazon RDS (?:(?:Beta|Preview) )?(?P<region>[a-z]+-[a-z]+-\d) Root CA "
    r"(?P<kind>RSA2048|RSA4096|ECC384) G1$"
)


@pytest.fixture(scope="module")
def certs() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(BUNDLE.read_bytes())


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_every_certificate_is_an_rds_g1_root_ca_valid_today(
    certs: list[x509.Certificate],
) -> None:
    now = datetime.now(UTC)
    for cert in certs:
        name = cn(cert)
        assert SUBJECT.match(name), name
        org = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
        unit = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        assert (org, unit) == ("Amazon Web Services, Inc.", "Amazon RDS"), name
        assert cert.issuer == cert.subject, name
        cert.verify_directly_issued_by(cert)  # raises if the self-signature does not verify
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, name
        assert cert.not_valid_before_utc < now < cert.not_valid_after_utc, name


def test_each_region_has_all_three_g1_authorities(certs: list[x509.Certificate]) -> None:
    kinds: dict[str, set[str]] = defaultdict(set)
    for cert in certs:
        match = SUBJECT.match(cn(cert))
        assert match
        kinds[match["region"]].add(match["kind"])
    assert {r: k for r, k in kinds.items() if k != {"RSA2048", "RSA4096", "ECC384"}} == {}
    assert len({cert.fingerprint(hashes.SHA256()) for cert in certs}) == len(certs)  # no duplicates


def test_the_regions_of_our_stacks_are_covered(certs: list[x509.Certificate]) -> None:
    covered = {m["region"] for c in certs if (m := SUBJECT.match(cn(c)))}
    regions = set()
    for stack in sorted((REPO / "stacks").glob("Pulumi.*.yaml")):
        region = (yaml.safe_load(stack.read_text()).get("config") or {}).get("aws:region")
        if region:
            regions.add(region)
    assert regions, "no stack names an aws:region"
    assert regions <= covered, f"no RDS CA in the bundle for {sorted(regions - covered)}"


def test_readme_states_this_file_and_the_lambda_copy_is_identical(
    certs: list[x509.Certificate],
) -> None:
    text = README.read_text()
    digest = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()
    assert f"`{digest}`" in text
    assert f"{len(certs)} X.509 certificates" in text
    assert JOB_BUNDLE.read_bytes() == BUNDLE.read_bytes()
