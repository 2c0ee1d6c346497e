"""``keel quickstart``: a churn project that walks the whole lifecycle on the embedded default."""
