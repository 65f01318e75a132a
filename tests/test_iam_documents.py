"""infra.components.iam: the one way the kit writes IAM documents."""

from __future__ import annotations

import json

from infra.components.iam import document, trust


def test_document_has_the_version_iam_needs_and_the_statements_in_order():
    stmts = [
        {"Sid": "A", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
        {"Sid": "B", "Effect": "Deny", "Action": "*", "Resource": "*"},
    ]
    doc = json.loads(document(stmts))
    assert doc == {"Version": "2012-10-17", "Statement": stmts}


def test_trust_admits_one_service_with_the_actions_given():
    assert json.loads(trust("lambda.amazonaws.com"))["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    two = json.loads(trust("eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]))
    assert two["Statement"][0]["Action"] == ["sts:AssumeRole", "sts:TagSession"]
