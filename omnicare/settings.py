"""OmniCare settings: every deployment choice comes from the environment.

The embedded default (no variables set) runs on a laptop with no services:
SQLite, Celery in eager mode, the in-memory channel layer. Production sets
DATABASE_URL, REDIS_URL, OMNICARE_SECRET_KEY, OMNICARE_ALLOWED_HOSTS, and
keeps DEBUG off (the default). See README.md for the full list.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("OMNICARE_DEBUG", False)

SECRET_KEY = os.environ.get("OMNICARE_SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG or env_bool("OMNICARE_TESTING", False) or "pytest" in sys.modules:
        # Only for local development and tests; production must set the variable.
        SECRET_KEY = "insecure-dev-only-key-set-OMNICARE_SECRET_KEY-in-production"  # noqa: S105
    else:
        raise ImproperlyConfigured("OMNICARE_SECRET_KEY must be set when OMNICARE_DEBUG is off")

ALLOWED_HOSTS = env_list("OMNICARE_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("OMNICARE_CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # serves Swagger UI from our own static files (no CDN)
    "omnicare.core",
    "omnicare.access",
    "omnicare.fhir",
    "omnicare.sync",
    "omnicare.audit",
    "omnicare.keys",
    "omnicare.hl7",
    "omnicare.cds",  # CDS (clinical decision support)
    "omnicare.bulk",  # FHIR Bulk Data $export / $import (issue 15)
    "omnicare.subscriptions",  # FHIR Subscriptions, rest-hook (issue 15)
    "omnicare.prefetch",  # device sets: the learned prefetch ranking (issue 13)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Compresses large JSON (sync pulls, FHIR bundles) when the client sends Accept-Encoding: gzip. BREACH:
    # safe because no secret is reflected in a compressed body (API bodies are JSON without the CSRF token).
    # WhiteNoise before GZip: static files are served pre-compressed (.br/.gz made at build time, see
    # README "Production"), never gzipped again per request (the 9.6 MB Pyodide wasm took 0.7 s that way).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.gzip.GZipMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "omnicare.urls"
ASGI_APPLICATION = "omnicare.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'omnicare.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(os.environ.get("OMNICARE_DB_CONN_MAX_AGE", "0")))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    (BASE_DIR / "var").mkdir(exist_ok=True)
    # WAL lets readers pull while a writer commits; the timeout turns lock contention into waiting.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("OMNICARE_DB_POOL", True):
    # A psycopg pool per process: measured 1.2-2x more FHIR requests/s than a connection per request,
    # and unlike CONN_MAX_AGE it cannot exhaust the server's connections under concurrent ASGI requests.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("OMNICARE_DB_POOL_MIN", "2")),
        "max_size": int(os.environ.get("OMNICARE_DB_POOL_MAX", "8")),
    }
# --- scale: feed position at commit, fail fast ---------------------------------------------------------
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend plus ``connection.before_commit`` (the change feed takes its position there).
    DATABASES["default"]["ENGINE"] = "omnicare.core.postgresql"
    # An unreachable database answers 503 in ~2 s instead of hanging (connect and pool-checkout timeouts).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("OMNICARE_DB_CONNECT_TIMEOUT", "2"))
    )
    if "pool" in DATABASES["default"]["OPTIONS"]:
        DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = float(os.environ.get("OMNICARE_DB_POOL_TIMEOUT", "2"))
    # Prepared statements: psycopg binds on the server and prepares a statement the Nth time a connection runs it,
    # so PostgreSQL parses the statements every request makes (the token, the care team, the audit record, ...)
    # once per pooled connection. Each execution is still planned for its own values (force_custom_plan): the
    # generic plan PostgreSQL switches to after five runs halved a read's backend CPU but made the name search
    # 4x dearer (0.9 -> 3.5 ms). Measured (`bench.request_profile --cpu`, PostgreSQL backend CPU per request, off
    # -> on): read 0.75 -> 0.67 ms, care-team read 1.65 -> 0.80, search 0.9 -> 0.8, create 1.8 -> 1.53. Django
    # leaves them off for poolers: behind PgBouncer in transaction mode set OMNICARE_DB_PREPARE_THRESHOLD=off
    # (this app's own pool keeps its connections, so they are safe here).
    _prepare = os.environ.get("OMNICARE_DB_PREPARE_THRESHOLD", "5").strip().lower()
    if _prepare not in ("off", "0", "none", ""):
        _opts = DATABASES["default"]["OPTIONS"]
        _opts["server_side_binding"] = True
        _opts["prepare_threshold"] = int(_prepare)
        _opts["options"] = (_opts.get("options", "") + " -c plan_cache_mode=force_custom_plan").strip()
# API requests in flight per process (the rest wait in line, then 503): the pool size, or 8 on SQLite.
OMNICARE_MAX_CONCURRENT = int(os.environ.get("OMNICARE_MAX_CONCURRENT", os.environ.get("OMNICARE_DB_POOL_MAX", "8")))
OMNICARE_QUEUE_SECONDS = float(os.environ.get("OMNICARE_QUEUE_SECONDS", "30"))
# Tests get their own database name so parallel runs on one server don't collide.
if os.environ.get("OMNICARE_TEST_DB_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["OMNICARE_TEST_DB_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, Celery, Channels ---------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")
# Without a broker there is no worker: run tasks inline so the embedded default still works.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True  # a task killed mid-run is redelivered; tasks are idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {}
# --- scale: jobs that survive a dead worker or broker ------------------------------------------------------
# Fail fast when the broker is down (the outbox sweeper re-sends later), and redeliver an unacknowledged task
# of a hard-killed worker after minutes, not kombu's default hour (the sweeper re-queues dead jobs sooner).
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("OMNICARE_BROKER_TIMEOUT", "2"))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("OMNICARE_BROKER_VISIBILITY_SECONDS", "900")),
    "socket_connect_timeout": float(os.environ.get("OMNICARE_BROKER_TIMEOUT", "2")),
    "socket_timeout": 10,
}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = float(os.environ.get("OMNICARE_BROKER_TIMEOUT", "2"))
OMNICARE_JOB_CHUNK = int(os.environ.get("OMNICARE_JOB_CHUNK", "100"))  # mutations per committed chunk
OMNICARE_JOB_STALE_SECONDS = float(os.environ.get("OMNICARE_JOB_STALE_SECONDS", "60"))  # no heartbeat: dead
OMNICARE_JOB_LOST_SECONDS = float(os.environ.get("OMNICARE_JOB_LOST_SECONDS", "600"))  # sent, never started
OMNICARE_JOBS_QUEUE = os.environ.get("OMNICARE_JOBS_QUEUE", "")  # Celery queue for sync jobs ("" = default)
OMNICARE_JOB_MAX_ATTEMPTS = int(os.environ.get("OMNICARE_JOB_MAX_ATTEMPTS", "5"))
CELERY_BEAT_SCHEDULE["sync-sweep-jobs"] = {
    "task": "omnicare.sync.sweep_jobs",
    "schedule": float(os.environ.get("OMNICARE_JOB_SWEEP_SECONDS", "15")),
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": os.environ.get("OMNICARE_CHANNEL_PREFIX", "omnicare")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth and sessions -----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
SESSION_COOKIE_AGE = int(os.environ.get("OMNICARE_SESSION_SECONDS", str(8 * 3600)))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE = env_bool("OMNICARE_SECURE", not DEBUG)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_HSTS_SECONDS = int(os.environ.get("OMNICARE_HSTS_SECONDS", "31536000" if SECURE else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_SSL_REDIRECT = env_bool("OMNICARE_SSL_REDIRECT", False)  # usually done by the TLS proxy
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("OMNICARE_BEHIND_PROXY", False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Static files and the PWA ----------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# The PWA (index.html, sw.js, manifest, the Pyodide runtime under vendor/, the pyclient wheel
# under wheels/) is served from the root scope so the service worker controls the whole app.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # collectstatic writes .gz/.br beside each file (admin, API docs); served without per-request work.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_ROOT = BASE_DIR / "pwa"
WHITENOISE_INDEX_FILE = True
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_MIMETYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".whl": "application/zip",
                        ".webmanifest": "application/manifest+json"}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Limits ------------------------------------------------------------------------
# Bodies above this are refused with 413 before they are parsed.
OMNICARE_MAX_BODY_BYTES = int(os.environ.get("OMNICARE_MAX_BODY_BYTES", str(10 * 1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = OMNICARE_MAX_BODY_BYTES
# Issue 13 item 4: roles whose devices keep no offline data (shared workstations; the group "no-offline-data"
# in the admin does the same per account), and whether offline data needs browser-granted persistent storage.
OMNICARE_NO_OFFLINE_DATA_ROLES = env_list("OMNICARE_NO_OFFLINE_DATA_ROLES", "")
OMNICARE_REQUIRE_PERSISTENCE = env_bool("OMNICARE_REQUIRE_PERSISTENCE", False)
OMNICARE_PAGE_MAX = int(os.environ.get("OMNICARE_PAGE_MAX", "1000"))

# --- Logging: never log request bodies or query strings (PHI) --------------------------
LOG_LEVEL = os.environ.get("OMNICARE_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # django.request logs the full path (which can contain search parameters such as names): keep it to errors.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}


# --- Security: roles, audit trail, keys, sessions, CSP (access-control work; env-driven) -----------
# Key backend: "local" (master key from OMNICARE_MASTER_KEY, base64 of 32 bytes) or "pkcs11"
# (OMNICARE_PKCS11_LIB, OMNICARE_PKCS11_TOKEN, OMNICARE_PKCS11_PIN). See omnicare/keys/backends.py.
OMNICARE_KEY_BACKEND = os.environ.get("OMNICARE_KEY_BACKEND", "local")
OMNICARE_KEY_ROTATION_DAYS = int(os.environ.get("OMNICARE_KEY_ROTATION_DAYS", "90"))
OMNICARE_AUDIT_RETENTION_YEARS = int(os.environ.get("OMNICARE_AUDIT_RETENTION_YEARS", "7"))
# A signed checkpoint every N events (and every minute from beat if the head moved).
OMNICARE_AUDIT_CHECKPOINT_EVERY = int(os.environ.get("OMNICARE_AUDIT_CHECKPOINT_EVERY", "256"))
OMNICARE_BREAK_GLASS_SECONDS = int(os.environ.get("OMNICARE_BREAK_GLASS_SECONDS", str(4 * 3600)))
# TOTP second factor required of clinical roles (enrolled users are always asked).
OMNICARE_MFA_ENFORCE = env_bool("OMNICARE_MFA_ENFORCE", False)
# Cookie sessions end after 15 idle minutes or 12 hours in all (bearer tokens have their own expiry).
OMNICARE_SESSION_IDLE_SECONDS = int(os.environ.get("OMNICARE_SESSION_IDLE_SECONDS", "900"))
OMNICARE_SESSION_ABSOLUTE_SECONDS = int(os.environ.get("OMNICARE_SESSION_ABSOLUTE_SECONDS", str(12 * 3600)))
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
    "omnicare.access.middleware.SessionTimeoutMiddleware",
)
# Content-Security-Policy: Pyodide needs 'wasm-unsafe-eval' (WebAssembly compile), never inline script.
MIDDLEWARE.insert(1, "django.middleware.csp.ContentSecurityPolicyMiddleware")
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'", "'wasm-unsafe-eval'"],
    "worker-src": ["'self'", "blob:"],
    "connect-src": ["'self'"],  # CSP3: 'self' covers same-origin ws:/wss:
    "img-src": ["'self'", "data:", "blob:"],
    "style-src": ["'self'"],
    "font-src": ["'self'"],
    "manifest-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
CELERY_BEAT_SCHEDULE.update({
    "audit-checkpoint": {"task": "omnicare.audit.checkpoint", "schedule": 60.0},
    "audit-archive": {"task": "omnicare.audit.archive", "schedule": 24 * 3600.0},
    "break-glass-expire": {"task": "omnicare.access.break_glass_expire", "schedule": 60.0},
    "keys-rotate-due": {"task": "omnicare.keys.rotate_due", "schedule": 24 * 3600.0},
})

# --- Audit trail (audit work): lock-free sequencer, pinned checkpoint key, checkpoints outside the DB ------
# The verifier trusts only this Ed25519 public key (``manage.py audit_pubkey`` prints the value); unset, the
# key is derived from the master key / HSM, never read from the database.
OMNICARE_AUDIT_PUBKEY = os.environ.get("OMNICARE_AUDIT_PUBKEY", "")
# Longest wait of a sequenced event for a signed checkpoint; audit_verify fails past it (+10 s).
OMNICARE_AUDIT_CHECKPOINT_SECONDS = float(os.environ.get("OMNICARE_AUDIT_CHECKPOINT_SECONDS", "60"))
# audit_verify fails when an event waited longer than this for the sequencer (sequencer down).
OMNICARE_AUDIT_UNSEQUENCED_MAX_SECONDS = float(os.environ.get("OMNICARE_AUDIT_UNSEQUENCED_MAX_SECONDS", "60"))
# Without a worker (embedded default) the sequencer runs right after each audited request commits.
OMNICARE_AUDIT_SEQUENCE_INLINE = env_bool("OMNICARE_AUDIT_SEQUENCE_INLINE", CELERY_TASK_ALWAYS_EAGER)


def _audit_checkpoint_log_default() -> str:
    """One append-only file per database (so a bench or test database never mixes into the demo's)."""
    if "pytest" in sys.modules:
        return ""  # tests that want the external log set it to a temporary file
    import hashlib

    db = DATABASES["default"]
    ident = f"{db.get('HOST') or ''}:{db.get('PORT') or ''}/{db.get('NAME')}"
    stem = Path(str(db.get("NAME") or "db")).name.replace(".", "-")[:40]
    return str(BASE_DIR / "var" / "audit" / f"checkpoints-{stem}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}.jsonl")


# Signed checkpoints are also appended here (put it on another disk / a WORM or object-store mount). "" = off.
OMNICARE_AUDIT_CHECKPOINT_LOG = os.environ.get("OMNICARE_AUDIT_CHECKPOINT_LOG", _audit_checkpoint_log_default())
CELERY_BEAT_SCHEDULE["audit-sequence"] = {"task": "omnicare.audit.sequence", "schedule": 1.0}

# --- HL7 v2 interface (issue 12): MLLP listener, inbound/outbound queues, pharmacy endpoint -----------
OMNICARE_HL7_HOST = os.environ.get("OMNICARE_HL7_HOST", "127.0.0.1")
OMNICARE_HL7_PORT = int(os.environ.get("OMNICARE_HL7_PORT", "2575"))
OMNICARE_HL7_MAX_BYTES = int(os.environ.get("OMNICARE_HL7_MAX_BYTES", str(16 * 1024 * 1024)))
OMNICARE_HL7_IDLE_SECONDS = float(os.environ.get("OMNICARE_HL7_IDLE_SECONDS", "300"))
OMNICARE_HL7_MAX_ATTEMPTS = int(os.environ.get("OMNICARE_HL7_MAX_ATTEMPTS", "8"))
OMNICARE_HL7_RETRY_BASE_SECONDS = float(os.environ.get("OMNICARE_HL7_RETRY_BASE_SECONDS", "5"))
OMNICARE_HL7_RETRY_CAP_SECONDS = float(os.environ.get("OMNICARE_HL7_RETRY_CAP_SECONDS", "3600"))
# Outbound RDE^O11 to the pharmacy system: host:port ("" = no pharmacy interface), ACK wait in seconds.
OMNICARE_HL7_PHARMACY_ENDPOINT = os.environ.get("OMNICARE_HL7_PHARMACY_ENDPOINT", "")
OMNICARE_HL7_ACK_TIMEOUT_SECONDS = float(os.environ.get("OMNICARE_HL7_ACK_TIMEOUT_SECONDS", "30"))
OMNICARE_HL7_CELERY_QUEUE = os.environ.get("OMNICARE_HL7_CELERY_QUEUE", "")  # "" = Celery's default queue
# Inbound messages mapped per transaction (a savepoint each): the commit and the hint are per batch.
OMNICARE_HL7_BATCH = int(os.environ.get("OMNICARE_HL7_BATCH", "64"))
CELERY_BEAT_SCHEDULE["hl7-retry-due"] = {"task": "omnicare.hl7.retry_due", "schedule": 15.0}
# --- Operations dashboard, device telemetry, Prometheus (ops work; env-driven) -----------------------------
INSTALLED_APPS.append("omnicare.ops")
# After WhiteNoise: static files are answered before it and never counted as requests.
MIDDLEWARE.insert(MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware") + 1,
                  "omnicare.ops.middleware.RequestTimingMiddleware")
# /metrics is off (404) unless a bearer token is set; PROMETHEUS_MULTIPROC_DIR enables multiprocess mode.
OMNICARE_METRICS_TOKEN = os.environ.get("OMNICARE_METRICS_TOKEN", "")
OMNICARE_OPS_SILENT_MINUTES = int(os.environ.get("OMNICARE_OPS_SILENT_MINUTES", "15"))
OMNICARE_OPS_ALERT_UNSYNCED_HOURS = float(os.environ.get("OMNICARE_OPS_ALERT_UNSYNCED_HOURS", "24"))
OMNICARE_OPS_ALERT_ERROR_RATE_PCT = float(os.environ.get("OMNICARE_OPS_ALERT_ERROR_RATE_PCT", "5"))
OMNICARE_OPS_ALERT_BREAK_GLASS = env_bool("OMNICARE_OPS_ALERT_BREAK_GLASS", True)
OMNICARE_OPS_FLUSH_SECONDS = float(os.environ.get("OMNICARE_OPS_FLUSH_SECONDS", "5"))
OMNICARE_OPS_REFRESH_SECONDS = int(os.environ.get("OMNICARE_OPS_REFRESH_SECONDS", "15"))
OMNICARE_OPS_AUDIT_REFRESH_SECONDS = int(os.environ.get("OMNICARE_OPS_AUDIT_REFRESH_SECONDS", "300"))
# The page folds new audit events itself only without a beat (embedded default); with a worker the beat does.
OMNICARE_OPS_INLINE_ROLLUP = int(os.environ.get("OMNICARE_OPS_INLINE_ROLLUP",
                                                "20000" if CELERY_TASK_ALWAYS_EAGER else "0"))
# The dashboard's figures are computed once per this many seconds and shared by every viewer (0 = every view).
OMNICARE_OPS_SNAPSHOT_SECONDS = float(os.environ.get("OMNICARE_OPS_SNAPSHOT_SECONDS", "10"))
# An automatic merge or a person's resolution reverted within this window counts as corrected (accuracy).
OMNICARE_OPS_CORRECTION_HOURS = float(os.environ.get("OMNICARE_OPS_CORRECTION_HOURS", "72"))
# Retention of the ops tables in days (0 = keep): telemetry history, per-minute requests, hourly counters,
# verification verdicts, cleared alerts, decided correction watches.
OMNICARE_OPS_RETAIN_REPORT_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_REPORT_DAYS", "30"))
OMNICARE_OPS_RETAIN_REQUEST_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_REQUEST_DAYS", "8"))
OMNICARE_OPS_RETAIN_COUNTER_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_COUNTER_DAYS", "400"))
OMNICARE_OPS_RETAIN_VERIFY_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_VERIFY_DAYS", "90"))
OMNICARE_OPS_RETAIN_ALERT_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_ALERT_DAYS", "90"))
OMNICARE_OPS_RETAIN_CHECK_DAYS = float(os.environ.get("OMNICARE_OPS_RETAIN_CHECK_DAYS", "90"))
CELERY_BEAT_SCHEDULE.update({
    "ops-refresh": {"task": "omnicare.ops.refresh", "schedule": 30.0},
    "ops-retention": {"task": "omnicare.ops.retention",
                      "schedule": float(os.environ.get("OMNICARE_OPS_RETENTION_HOURS", "24")) * 3600},
    "ops-verify": {"task": "omnicare.ops.verify",
                   "schedule": float(os.environ.get("OMNICARE_OPS_VERIFY_HOURS", "6")) * 3600},
})

# --- Bulk Data ($export / $import, issue 15) ---------------------------------------------------------------------
OMNICARE_BULK_DIR = Path(os.environ.get("OMNICARE_BULK_DIR", str(BASE_DIR / "var" / "bulk")))
OMNICARE_BULK_EXPIRY_SECONDS = int(os.environ.get("OMNICARE_BULK_EXPIRY_SECONDS", str(24 * 3600)))
OMNICARE_BULK_CHUNK_BYTES = int(os.environ.get("OMNICARE_BULK_CHUNK_BYTES", str(4 * 1024 * 1024)))
OMNICARE_BULK_MAX_BYTES = int(os.environ.get("OMNICARE_BULK_MAX_BYTES", str(2 * 1024**3)))
CELERY_BEAT_SCHEDULE["bulk-expire"] = {"task": "omnicare.bulk.expire", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["bulk-resume"] = {"task": "omnicare.bulk.resume", "schedule": 300.0}
CELERY_BEAT_SCHEDULE["subscriptions-dispatch"] = {"task": "omnicare.subscriptions.dispatch", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["subscriptions-heartbeat"] = {"task": "omnicare.subscriptions.heartbeat", "schedule": 5.0}
# --- Trust hardening (issue 10 items 7-19: caching, CORS, WebSocket origin, access log) ------------------------
# PHI responses (/fhir/, /api/, /admin/) are never stored by a browser or proxy cache.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "omnicare.core.middleware.NoStoreMiddleware")
# The PWA's static files are same-origin only (WhiteNoise would send Access-Control-Allow-Origin: *).
WHITENOISE_ALLOW_ALL_ORIGINS = False
# Access log without query strings (PHI): our own middleware logs method, path, status and time on
# ``omnicare.http``; uvicorn's and daphne's access loggers get a filter that strips query strings
# (omnicare/core/logs.py). OMNICARE_ACCESS_LOG=0 turns our access log off.
if env_bool("OMNICARE_ACCESS_LOG", True):
    MIDDLEWARE.insert(0, "omnicare.core.logs.AccessLogMiddleware")
LOGGING["filters"] = {"strip_query": {"()": "omnicare.core.logs.StripQueryFilter"}}
LOGGING["loggers"].update({
    "omnicare.http": {"level": LOG_LEVEL, "handlers": ["console"], "propagate": False},
    "uvicorn.access": {"filters": ["strip_query"], "handlers": ["console"], "propagate": False},
    "django.channels.server": {"filters": ["strip_query"], "handlers": ["console"], "propagate": False},
})
# redis-py 8 times a read out after its socket timeout, shorter than channels-redis' 5 s blocking BZPOPMIN:
# every idle WebSocket crashed after ~5 s on Redis (found by the revocation tests). Give reads room.
if REDIS_URL:
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [  # type: ignore[index]
        {"address": REDIS_URL, "socket_timeout": float(os.environ.get("OMNICARE_REDIS_SOCKET_TIMEOUT", "30"))}
    ]

# --- Device sets: storage budgets and the prefetch ranking (issue 13) -----------------------------------------
# Defaults from the seed ("Web 1–5 GB IndexedDB", "Mobile 500 MB–2 GB"): the low end. A role may set its own
# (the largest of a user's roles wins); an administrator may set one per device (Device.storage_budget_bytes).
OMNICARE_DEVICE_BUDGET_BYTES = {
    "web": int(os.environ.get("OMNICARE_BUDGET_WEB_BYTES", str(1_000_000_000))),
    "mobile": int(os.environ.get("OMNICARE_BUDGET_MOBILE_BYTES", str(500_000_000))),
}
OMNICARE_ROLE_BUDGET_BYTES: dict[str, int] = {}
OMNICARE_PREFETCH_SITE = os.environ.get("OMNICARE_PREFETCH_SITE", "default")
OMNICARE_PREFETCH_HISTORY_DAYS = int(os.environ.get("OMNICARE_PREFETCH_HISTORY_DAYS", "28"))
OMNICARE_PREFETCH_MIN_OPENS = int(os.environ.get("OMNICARE_PREFETCH_MIN_OPENS", "500"))  # below: heuristic
CELERY_BEAT_SCHEDULE["prefetch-train"] = {"task": "omnicare.prefetch.train", "schedule": 6 * 3600.0}
