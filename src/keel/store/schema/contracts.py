"""Data contract tables: every validation, every check's result, and stored profiles."""

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

from keel.store.schema._base import metadata

# One row per validation of one batch against one contract.
contract_validations = Table(
    "contract_validations",
    metadata,
    Column("id", String(32), primary_key=True),
    # what was validated: an attached target, or the contract's name for a plain path
    Column("target", String(255), nullable=False),
    Column("contract", String(255), nullable=False),
    Column("contract_hash", String(64), nullable=False),
    # training_set | materialize | log_dataset | serving | manual
    Column("stage", String(64), nullable=True),
    Column("run_id", String(32), nullable=True, index=True),
    Column("dataset_fingerprint", String(64), nullable=True),
    Column("source", Text, nullable=True),
    Column("num_rows", BigInteger, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("warnings", Integer, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_contract_validations_target_created", "target", "created_ms"),
)

# One row per check of a validation. observed and sample hold JSON.
contract_results = Table(
    "contract_results",
    metadata,
    Column("validation_id", String(32), primary_key=True),
    Column("check_id", String(1000), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("column", String(255), nullable=True),
    Column("severity", String(8), nullable=False),
    # pass | fail | error | skip
    Column("status", String(8), nullable=False),
    Column("expected", Text, nullable=False),
    Column("observed", Text, nullable=True),
    Column("failing_count", BigInteger, nullable=True),
    Column("failing_fraction", Float, nullable=True),
    Column("sample", Text, nullable=True),
    Column("message", Text, nullable=True),
)

# Profiles that relative checks compare against: accepted batches and pinned
# snapshots. The profile itself is a JSON blob in the artifact store (digest),
# referenced from `artifacts` (owner_kind 'contract_profile') so gc keeps it.
contract_profiles = Table(
    "contract_profiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(255), nullable=False),
    # batch (an accepted batch) | snapshot (pinned by name)
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=True, unique=True),
    Column("validation_id", String(32), nullable=True),
    Column("digest", String(64), nullable=False),
    Column("num_rows", BigInteger, nullable=False),
    # the time the batch stands for (for "same weekday last week")
    Column("batch_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_contract_profiles_target_kind_batch", "target", "kind", "batch_ms"),
)
