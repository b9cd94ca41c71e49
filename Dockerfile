# The web app, the Celery worker and Celery beat share this image (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/scheduler \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# Dependencies first, pinned by constraints.txt, so code changes reuse this layer.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt --constraint constraints.txt

COPY . .
# docker-compose's secrets live in ./secrets/ beside this file; they must never be baked into
# a layer, so a build context that carries them (no .dockerignore entry) fails here.
RUN if [ -e secrets ] || [ -e .env ]; then \
        echo "secrets/ or .env reached the image: list them in .dockerignore" >&2; exit 1; \
    fi
RUN pybabel compile -d scheduler/locale -D django \
    && STATIC_MANIFEST=true python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app scheduler \
    && mkdir -p "$VAR_DIR/outbox-journal" && chown -R scheduler "$VAR_DIR"

USER scheduler
EXPOSE 8000
# No access log: request lines would carry calendar feed tokens (see config/logging.py).
# Threaded workers (config/gunicorn.py), as docker-compose and Kubernetes run it.
CMD ["gunicorn", "config.wsgi:application", "--bind=0.0.0.0:8000", "--config=config/gunicorn.py"]
