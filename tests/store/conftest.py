"""Store fixtures: moto's S3 server and a fresh bucket (tests/store/moto_s3.py)."""

from tests.store.moto_s3 import s3_bucket, s3_endpoint

__all__ = ["s3_bucket", "s3_endpoint"]
