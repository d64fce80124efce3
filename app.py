"""WSGI entry point: ``gunicorn -c gunicorn.conf.py app:app``; Vercel imports ``app`` too."""

from kimi import create_app

app = create_app()
