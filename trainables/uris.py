"""URIs as they may be shown or recorded: without the secrets a tracking or storage URI can carry.

A tracking URI may hold a password (postgresql://user:PASSWORD@host/db, http://user:PASSWORD@host),
and a storage URI may hold a bucket's credentials as query options (pyarrow's
s3://bucket/prefix?access_key=…&secret_key=…&session_token=…). `masked` is what every print of such a
URI goes through (a terminal scrollback, a CI log and a shared screen are all readable by others);
`without_secrets` is what a URI recorded in a run (an MLflow tag) keeps: the secret options dropped,
so a reader uses its own credentials (environment, instance profile), and the rest (endpoint_override,
region) still reaches the same bucket. Pure string functions: no I/O, no imports beyond the standard library.
"""
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# query options whose values are credentials: pyarrow's S3 options, GCS's access_token, and the usual names
SECRET_OPTIONS = ("access_key", "secret_key", "session_token", "access_token", "token", "password",
                  "secret", "credential", "credentials", "sig", "signature", "api_key", "apikey")


def _is_secret(name):
    lowered = name.lower()
    return lowered in SECRET_OPTIONS or lowered.replace("-", "_") in SECRET_OPTIONS or "secret" in lowered \
        or "password" in lowered or "token" in lowered


def masked(uri):
    """`uri` with a password in its userinfo and the values of secret query options as ***; anything else
    (a path, a URI without secrets, a value that is no URI at all) unchanged, character for character."""
    return _rewrite(uri, lambda user: f"{user}:{MASK}", lambda name, value: MASK)


def without_secrets(uri):
    """`uri` with no password in its userinfo and no secret query options; anything else unchanged."""
    return _rewrite(uri, lambda user: user, lambda name, value: None)


def _rewrite(uri, userinfo, secret_value):
    """`uri` with userinfo(user) for a user:password userinfo and secret_value(name, value) for each
    secret query option (None drops it); `uri` itself when it has neither."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = any(_is_secret(name) for name, _ in pairs)
    if parts.password is None and not secret:
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        user, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo(user.split(':', 1)[0])}@{hostport}"
    query = parts.query
    if secret:
        kept = [(name, secret_value(name, value) if _is_secret(name) else value) for name, value in pairs]
        query = urlencode([(name, value) for name, value in kept if value is not None], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_password(uri):
    """Whether `uri`'s userinfo holds a password (user:PASSWORD@host)."""
    return isinstance(uri, str) and "://" in uri and urlsplit(uri).password is not None
