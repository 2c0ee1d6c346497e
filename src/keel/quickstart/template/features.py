"""Feature definitions of the churn project (created by `keel quickstart`).

Data, relative to the project root:
  data/customers.parquet   customer profile snapshots
  data/usage.parquet       daily usage events per customer
  data/usage_30d.parquet   30-day usage totals per customer and day (built by the pipeline)
"""

from datetime import timedelta

import pandas as pd

from keel.features import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Float64,
    Int64,
    OnDemandFeatureView,
    Source,
    String,
)

customer = Entity("customer", join_keys=["customer_id"], value_type=Int64, description="A subscriber.")

profile = FeatureView(
    "profile",
    entities=[customer],
    source=Source("customers", path="data/customers.parquet", timestamp_field="event_timestamp",
                  created_timestamp_field="created_timestamp", description="Customer profile snapshots."),
    schema=[Field("plan", String), Field("region", String), Field("tenure_months", Int64), Field("monthly_fee", Float64)],
    owner="growth@example.com",
    description="Plan and billing profile of each customer.",
    tags={"team": "growth"},
)

usage = FeatureView(
    "usage",
    entities=[customer],
    source=Source("usage_feed", path="data/usage.parquet", timestamp_field="event_timestamp",
                  created_timestamp_field="created_timestamp", description="Daily usage events per customer."),
    ttl=timedelta(days=3),
    # written once: runs for training sets, materialization and pushes alike
    transformation="SELECT *, minutes / nullif(sessions, 0) AS minutes_per_session FROM source",
    schema=[Field("sessions", Int64), Field("minutes", Float64), Field("minutes_per_session", Float64)],
    owner="growth@example.com",
    description="The latest day of usage; older than 3 days counts as missing.",
    tags={"team": "growth"},
)

usage_30d = FeatureView(
    "usage_30d",
    entities=[customer],
    source=Source("usage_30d", path="data/usage_30d.parquet", timestamp_field="event_timestamp",
                  created_timestamp_field="created_timestamp", description="30-day usage totals, one row per customer and day."),
    ttl=timedelta(days=3),
    schema=[Field("sessions_30d", Int64), Field("minutes_30d", Float64), Field("tickets_30d", Int64),
            Field("failures_30d", Int64), Field("minutes_trend", Float64)],
    owner="growth@example.com",
    description="Usage over the 30 days before each day, and the trend of the last 7 days against it.",
    tags={"team": "growth"},
)


def _fee_per_minute(df: pd.DataFrame) -> pd.DataFrame:
    minutes = df["minutes_30d"].astype("float64")
    return pd.DataFrame({"fee_per_minute": (df["monthly_fee"].astype("float64") / minutes.where(minutes > 0)).astype("float64")}, index=df.index)


pricing = OnDemandFeatureView(
    "pricing",
    sources=[profile[["monthly_fee"]], usage_30d[["minutes_30d"]]],
    request_schema=[],
    schema=[Field("fee_per_minute", Float64)],
    function=_fee_per_minute,
    description="What a minute of use costs the customer over the last 30 days.",
)

churn_v1 = FeatureService(
    "churn_v1",
    features=[profile, usage[["sessions", "minutes_per_session"]], usage_30d, pricing],
    description="Features of the churn model.",
    owner="growth@example.com",
)
