"""The feedback store in the stack's DynamoDB table (deploy/template.yaml `FeedbackTable`, key
`decision_id`). Each decision is one conditional put (`attribute_not_exists`), so a retried
request never writes twice and two reviewers' decisions are two items, both kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sumpipe.feedback.base import Decision

_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


class DynamoFeedbackStore:
    """A boto3 low-level DynamoDB client and the table's name."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def record(self, decision: Decision) -> bool:
        item = {
            name: _serialize(Decimal(str(value)) if isinstance(value, float) else value)
            for name, value in asdict(decision).items()
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(decision_id)"
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def decisions(self) -> Iterator[Decision]:
        found: list[Decision] = []
        for page in self._db.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=True):
            for item in page["Items"]:
                values = {name: _deserialize(value) for name, value in item.items()}
                values["time"] = float(values["time"])
                found.append(Decision(**values))
        # A scan has no order: sorted here as the SQLite store sorts.
        found.sort(key=lambda d: (d.time, d.decision_id))
        yield from found
