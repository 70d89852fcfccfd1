#!/usr/bin/env bash
# The README's production recipe, run as written (the lines between <prod-recipe> markers), on PostgreSQL and
# Redis with DEBUG off: migrate, collectstatic, two uvicorn servers, a Celery worker and beat; then a bounded
# mixed load (scripts/prod_load.py) during which the first server is SIGKILLed, and an exactly-once check.
# Bounded: ~2 minutes. Uses its own database (dropped at the end) and its own Redis channel prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
DB_NAME=${OMNICARE_SMOKE_DB:-omnicare_prod_smoke}
PG=${OMNICARE_SMOKE_PG:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL="$PG/$DB_NAME"
export REDIS_URL=${OMNICARE_SMOKE_REDIS:-${REDIS_URL:-redis://127.0.0.1:6379/0}}
export OMNICARE_CHANNEL_PREFIX=${OMNICARE_SMOKE_PREFIX:-prodsmoke}
export OMNICARE_JOBS_QUEUE="prodsmoke-$$"  # our worker only takes our jobs, whoever else uses this Redis
export OMNICARE_DEBUG=0 OMNICARE_ALLOWED_HOSTS=127.0.0.1,localhost OMNICARE_BEHIND_PROXY=1
export OMNICARE_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
export OMNICARE_MASTER_KEY="$(python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
export OMNICARE_LOG_LEVEL=WARNING PYTHONUNBUFFERED=1
unset CELERY_TASK_ALWAYS_EAGER OMNICARE_TESTING

STATE=$(mktemp -d /tmp/omnicare-prod-smoke.XXXXXX)
PIDS=()
cleanup() {
  rc=$?
  if [ $rc != 0 ]; then
    for f in "$STATE"/*.log; do echo "--- tail of $(basename "$f")"; tail -n 40 "$f"; done
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  psql "$PG/postgres" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

recipe() {  # the README's command starting with $1, as written
  sed -n '/^# <prod-recipe>$/,/^# <\/prod-recipe>$/p' README.md | grep -v '^#' | grep -E "^$1" | head -1
}
free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 120); do
    if curl -fsS "http://127.0.0.1:$1/api/health/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "server on port $1 never became ready"; cat "$STATE"/*.log; return 1
}

psql "$PG/postgres" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" -c "CREATE DATABASE $DB_NAME" >/dev/null

start=$(date +%s)
echo "--- $(recipe 'python manage.py migrate')"
eval "$(recipe 'python manage.py migrate')" > "$STATE/migrate.log" 2>&1 || { cat "$STATE/migrate.log"; exit 1; }
echo "--- $(recipe 'python manage.py collectstatic')"
eval "$(recipe 'python manage.py collectstatic')" > "$STATE/collectstatic.log" 2>&1 || { cat "$STATE/collectstatic.log"; exit 1; }

PORTS=("$(free_port)" "$(free_port)")
for i in 0 1; do
  cmd=$(recipe 'uvicorn ' | sed "s/--port 8000/--port ${PORTS[$i]}/")
  [ $i = 0 ] && echo "--- $cmd (and again on port ${PORTS[1]})"
  eval "exec $cmd" > "$STATE/server$i.log" 2>&1 &
  PIDS+=($!); disown $!
done
worker=$(recipe 'celery -A omnicare worker')
echo "--- $worker -Q \$OMNICARE_JOBS_QUEUE"
eval "exec $worker -Q $OMNICARE_JOBS_QUEUE" > "$STATE/worker.log" 2>&1 &
PIDS+=($!); disown $!
beat=$(recipe 'celery -A omnicare beat' | sed "s#/var/lib/omnicare/#$STATE/#")
echo "--- $beat"
eval "exec $beat" > "$STATE/beat.log" 2>&1 &
PIDS+=($!); disown $!
wait_ready "${PORTS[0]}"
wait_ready "${PORTS[1]}"

# What a deployment must show besides the load: DEBUG off, styled admin and API docs, pre-compressed wasm,
# no query strings in the server logs, beat's schedule outside the code.
base="http://127.0.0.1:${PORTS[1]}"
curl -fsS -o /dev/null "$base/static/admin/css/base.css" || { echo "admin CSS not served (collectstatic)"; exit 1; }
enc=$(curl -fsS -o /dev/null -D - -H 'Accept-Encoding: gzip' "$base/vendor/pyodide/pyodide.asm.wasm" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
[ "$enc" = gzip ] || { echo "wasm not served pre-compressed (Content-Encoding: '$enc')"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/no-such-page-xyz")
[ "$code" = 404 ] || { echo "unexpected status $code for a missing page"; exit 1; }
if curl -s "$base/no-such-page-xyz" | grep -q "Traceback\|DEBUG = True"; then echo "DEBUG pages are on"; exit 1; fi

TOKEN=$(python scripts/prod_load.py setup)
python scripts/prod_load.py load --urls "http://127.0.0.1:${PORTS[0]},http://127.0.0.1:${PORTS[1]}" \
  --token "$TOKEN" --kill-pid "${PIDS[0]}" --kill-at "${OMNICARE_SMOKE_KILL_AT:-12}" \
  --seconds "${OMNICARE_SMOKE_SECONDS:-30}" --out "$STATE/acks.json"
python scripts/prod_load.py verify --out "$STATE/acks.json"

if grep -q "sp[0-9]*&_count\|patient=sp" "$STATE"/server*.log; then echo "query strings (PHI) in the server log"; exit 1; fi
[ -e "$STATE/celerybeat-schedule" ] || ls "$STATE"/celerybeat-schedule* >/dev/null 2>&1 || { echo "beat wrote no schedule in the state directory"; cat "$STATE/beat.log"; exit 1; }
if [ -n "$(find "$ROOT" -maxdepth 1 -name 'celerybeat-schedule*' -newer "$STATE/migrate.log")" ]; then
  echo "beat wrote its schedule into the repo root"; exit 1
fi
echo "prod smoke passed in $(( $(date +%s) - start )) s"
