"""The job ledger: its contract and records (base), and its backends (dynamodb, memory)."""

from sumpipe.ledger.base import (
    ACTIVE_STATES,
    FAILED,
    FINISHED_RETENTION_S,
    QUEUED,
    RUNNING,
    STARTING,
    STOP_LEASE_S,
    SUCCEEDED,
    TERMINAL_STATES,
    InstanceLoad,
    InstanceStopping,
    Job,
    Ledger,
)
from sumpipe.ledger.dynamodb import ACTIVE_INDEX, DynamoLedger
from sumpipe.ledger.memory import MemoryLedger

__all__ = [
    "ACTIVE_INDEX",
    "ACTIVE_STATES",
    "FAILED",
    "FINISHED_RETENTION_S",
    "QUEUED",
    "RUNNING",
    "STARTING",
    "STOP_LEASE_S",
    "SUCCEEDED",
    "TERMINAL_STATES",
    "DynamoLedger",
    "InstanceLoad",
    "InstanceStopping",
    "Job",
    "Ledger",
    "MemoryLedger",
]
