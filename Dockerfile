# OmniCare server image: Django (ASGI, uvicorn) + the PWA with its own Pyodide runtime and the pyclient wheel.
#   docker build -t omnicare .
#   docker run -p 8000:8000 -e OMNICARE_SECRET_KEY=... -e DATABASE_URL=postgres://... -e REDIS_URL=redis://... omnicare
# Without DATABASE_URL it uses SQLite in /app/var (mount a volume there); without REDIS_URL Celery runs eagerly and
# the channel layer is in-memory (one process only). Migrations are a separate step:
#   docker run --rm -e ... omnicare python manage.py migrate

# --- 1. The Pyodide runtime from npm (served from our own origin, never a CDN) ---------------------------------
FROM node:20-slim AS pyodide
WORKDIR /build
RUN npm install --no-audit --no-fund --omit=dev pyodide@314.0.7 \
 && mkdir /pyodide \
 && cd node_modules/pyodide \
 && cp pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json package.json /pyodide/

# --- 2. The server ---------------------------------------------------------------------------------------------
FROM python:3.13-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMNICARE_DEBUG=0
WORKDIR /app

# Dependencies first (cached while only the code changes).
COPY pyproject.toml README.md* ./
COPY pyclient ./pyclient
COPY omnicare ./omnicare
RUN pip install . ./pyclient

COPY manage.py ./
COPY pwa ./pwa
# The browser's copy of the shared client logic: the same pyclient source, as a pure-Python wheel.
RUN rm -rf pwa/wheels pwa/vendor/pyodide \
 && pip wheel --no-deps ./pyclient -w pwa/wheels \
 && rm -rf pyclient/build pyclient/*.egg-info \
 && python -c 'import json,pathlib; w=sorted(pathlib.Path("pwa/wheels").glob("*.whl")); print(json.dumps({"pyclient": w[-1].name}))' > pwa/wheels/wheels.json
COPY --from=pyodide /pyodide ./pwa/vendor/pyodide
# Pre-compressed once here; WhiteNoise serves the .gz files as they are (no per-request gzip of the wasm).
RUN python -m whitenoise.compress -q pwa/vendor/pyodide

# Static files for the admin; the key only satisfies settings for this build step and is not kept.
RUN OMNICARE_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin omnicare \
 && mkdir -p /app/var \
 && chown -R omnicare:omnicare /app/var
USER omnicare
VOLUME ["/app/var"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=2).status == 200 else 1)"
# The code runs from /app (BASE_DIR holds pwa/ and var/); uvicorn puts the working directory first on sys.path.
CMD ["uvicorn", "omnicare.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]
