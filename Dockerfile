# kimi-free-api: the same gunicorn command as the Procfile, as a non-root user.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    KIMI_STATE_PATH=/app/data/kimi-state.db

WORKDIR /app

# Dependencies first, from the pinned list only, so code changes reuse this layer.
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kimi \
    && mkdir -p /app/data \
    && chown kimi /app/data
COPY --chown=root:root app.py gunicorn.conf.py ./
COPY --chown=root:root kimi ./kimi

USER kimi
# The state file (rotated refresh tokens, kept conversations): mount a volume here.
VOLUME ["/app/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
