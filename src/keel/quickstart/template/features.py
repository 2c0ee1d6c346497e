"""Feature definitions of the churn project (created by `keel quickstart`).

Data, relative to the project root:
  data/customers.parquet   customer profile snapshots
  data/usage.parquet       daily usage events per customer

The 30-day aggregates are Aggregation definitions: one definition computes them
offline as of each label's time and online as of now, so they cannot drift apart.
"""

from datetime import timedelta

import pandas as pd

from keel.features import (
    Aggregation,
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

usage_feed = Source("usage_feed", path="data/usage.parquet", timestamp_field="event_timestamp",
                    created_timestamp_field="created_timestamp", description="Daily usage events per customer.")

usage = FeatureView(
    "usage",
    entities=[customer],
    source=usage_feed,
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
    source=usage_feed,
    ttl=timedelta(days=31),
    schema=[Field("sessions", Int64), Field("minutes", Float64), Field("support_tickets", Int64), Field("payment_failures", Int64)],
    # windows end at the row's time (a label's, or now online); a day of usage counts once it arrived
    aggregations=[
        Aggregation("sessions", "sum", "30d", name="sessions_30d", empty=0),
        Aggregation("minutes", "sum", "30d", name="minutes_30d", empty=0),
        Aggregation("support_tickets", "sum", "30d", name="tickets_30d", empty=0),
        Aggregation("payment_failures", "sum", "30d", name="failures_30d", empty=0),
        Aggregation("minutes", "mean", "7d", name="minutes_mean_7d"),
        Aggregation("minutes", "mean", "30d", name="minutes_mean_30d"),
    ],
    owner="growth@example.com",
    description="Usage over the 30 days before each instant, and the mean of the last 7 days.",
    tags={"team": "growth"},
)


def _trend(df: pd.DataFrame) -> pd.DataFrame:
    week, month = df["minutes_mean_7d"].astype("float64"), df["minutes_mean_30d"].astype("float64")
    return pd.DataFrame({"minutes_trend": week / month.where(month > 0)}, index=df.index)


trend = OnDemandFeatureView(
    "trend",
    sources=[usage_30d[["minutes_mean_7d", "minutes_mean_30d"]]],
    schema=[Field("minutes_trend", Float64)],
    function=_trend,
    description="Minutes per day of the last 7 days against the last 30.",
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
    features=[profile, usage[["sessions", "minutes_per_session"]],
              usage_30d[["sessions_30d", "minutes_30d", "tickets_30d", "failures_30d"]], trend, pricing],
    description="Features of the churn model.",
    owner="growth@example.com",
)
