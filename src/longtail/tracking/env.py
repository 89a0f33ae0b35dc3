"""The MLflow client's environment, set up once where a process starts (the CLI, each component).

Standard library and `longtail.credentials` only, and the package's `__init__` imports nothing, so the
CLI sets it up before any command runs at no import cost.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from longtail.credentials import split_userinfo

# The environment variable MLflow (and KFP's MLflow plugin) read the tracking URI from.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# Where the MLflow client (and every process or task that inherits the environment) takes basic-auth
# credentials from, so that the tracking URI itself never carries them.
TRACKING_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
TRACKING_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
# A PostgreSQL store given straight as the tracking URI (no server): libpq, under psycopg and
# SQLAlchemy, takes the user and password from these when the URI has none, so its credentials
# travel apart from the URI as a server's do.
PG_USER_ENV = "PGUSER"
PG_PASSWORD_ENV = "PGPASSWORD"
# One bounded budget for every MLflow HTTP call: 3 tries of at most 15 s each, 1-2 s apart (under
# the 60 s network deadline, docs/safety.md "Bounds"), instead of MLflow's default of 8 tries of up to 120 s
# with 2-128 s backoff.
CLIENT_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def bound_client_retries(environ: MutableMapping[str, str]) -> None:
    """Set CLIENT_LIMITS in `environ` where not set already (call once, at the CLI or component edge)."""
    for name, value in CLIENT_LIMITS.items():
        environ.setdefault(name, value)


def tracking_env_edge(environ: MutableMapping[str, str]) -> None:
    """What every entry point (the CLI, each component) does to its environment before any MLflow call.

    The bounded retry budget (CLIENT_LIMITS, unless set), and the tracking URI's user name and
    password moved to MLflow's credential variables, so no later line, file or task can print them.
    """
    bound_client_retries(environ)
    tracking_credentials_to_env(environ)


def credentials_to_env(uri: str, environ: MutableMapping[str, str]) -> str:
    """`uri` without its userinfo; the user name and password move to MLFLOW_TRACKING_USERNAME/PASSWORD
    (a server's basic auth), or to PGUSER/PGPASSWORD for a PostgreSQL store (postgresql[+driver]://).

    Call it where a tracking URI enters longtail (the CLI): MLflow's client sends the former as basic
    auth, libpq reads the latter, child processes and kfp.local tasks inherit them, and nothing
    downstream (MLflow's "View run at" lines, mlflow_run.json, hints, logs) ever holds the password.
    """
    bare, user, password = split_userinfo(uri)
    user_env, password_env = ((PG_USER_ENV, PG_PASSWORD_ENV) if is_postgres_uri(uri)
                              else (TRACKING_USERNAME_ENV, TRACKING_PASSWORD_ENV))
    if user is not None:
        environ[user_env] = user
        if password is not None:
            environ[password_env] = password
    return bare


def is_postgres_uri(uri: str) -> bool:
    """Whether `uri` names a PostgreSQL store: postgresql://, or postgresql+<driver>:// (SQLAlchemy's form)."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() == "postgresql" and "://" in uri


def tracking_credentials_to_env(environ: MutableMapping[str, str]) -> None:
    """Strip MLFLOW_TRACKING_URI's userinfo into the credential variables, in place (the CLI edge)."""
    uri = environ.get(TRACKING_URI_ENV)
    if uri:
        environ[TRACKING_URI_ENV] = credentials_to_env(uri, environ)
