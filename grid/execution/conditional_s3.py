"""S3 conditional writes for the leases (grid/execution/leases.py): pyarrow's S3 filesystem, which the
project stores through (trainables/store.py), cannot write conditionally; boto3 can.

- `create(key, body)`: PutObject with `If-None-Match: *`: of several writers creating the same key,
  exactly one succeeds.
- `replace(key, body, etag)`: PutObject with `If-Match: ETAG`: succeeds only while the object is still
  the version that was read, so of two drivers replacing the same version (a release racing a takeover,
  or two takeovers of a stale holder) exactly one succeeds.
Both return the new object's ETag, or None when the condition failed (HTTP 412) or another conditional
write of the same key was in flight (409 ConditionalRequestConflict, S3's answer to such a collision):
the caller reads the key again. S3 has both on general purpose buckets (If-None-Match since August 2024,
If-Match since November 2024); moto implements them. An S3-compatible store that ignores the headers
would make every write unconditional: check yours (docs/failures.md).

The client reaches the same bucket as the pyarrow filesystem: its settings (credentials, region,
endpoint_override and scheme, anonymous, CA file, virtual addressing) are read from the filesystem
object itself, so an `s3://KEY:SECRET@bucket/p?endpoint_override=host:port&scheme=http` URI, the
AWS_* environment and real AWS reach the same bucket through both. AWS_ENDPOINT_URL(_S3) and
HTTPS_PROXY are read by boto3 from the environment, as by pyarrow.
"""
CONCURRENCY = 16   # requests in flight per driver: 2000 keys are 125 round trips, not 2000


class ConditionalS3:
    def __init__(self, filesystem, bucket):
        import boto3
        import botocore
        import botocore.config
        # the arguments pyarrow itself would rebuild the filesystem from (its pickling, as Ray ships it)
        options = filesystem.__reduce__()[1][0]
        if options.get("role_arn"):
            raise ValueError("storage: role_arn in an s3:// URI is not supported by the leases' boto3 client; "
                             "give the role through the AWS environment or profile (AWS_ROLE_ARN, AWS_PROFILE)")
        endpoint = options.get("endpoint_override") or None
        scheme = options.get("scheme") or "https"
        if endpoint and "://" not in endpoint:
            endpoint = f"{scheme}://{endpoint}"
        config = botocore.config.Config(
            max_pool_connections=CONCURRENCY, retries={"mode": "standard"},
            signature_version=botocore.UNSIGNED if options.get("anonymous") else None,
            s3={"addressing_style": "virtual"} if options.get("force_virtual_addressing") else None)
        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3", region_name=options.get("region") or None, endpoint_url=endpoint, use_ssl=scheme != "http",
            aws_access_key_id=options.get("access_key") or None,
            aws_secret_access_key=options.get("secret_key") or None,
            aws_session_token=options.get("session_token") or None,
            verify=options.get("tls_ca_file_path") or None, config=config)
        self._errors = self.client.exceptions

    def read(self, key):
        """(the object's bytes, its ETag), or (None, None) when there is none."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except self._errors.NoSuchKey:
            return None, None
        return response["Body"].read(), response["ETag"]

    def _put(self, key, body, **condition):
        import botocore.exceptions
        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **condition)["ETag"]
        except botocore.exceptions.ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or error.response.get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict"):
                return None
            if status == 404 and "IfMatch" in condition:   # the version read is gone altogether
                return None
            raise

    def create(self, key, body):
        return self._put(key, body, IfNoneMatch="*")

    def replace(self, key, body, etag):
        return self._put(key, body, IfMatch=etag)
