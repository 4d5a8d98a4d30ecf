"""gunicorn's settings for `gunicorn -c gunicorn.conf.py "web:create_app()"` (make run, compose).

Read from the environment through `config` (WEB_BIND, WEB_WORKERS, WEB_THREADS,
WEB_GRACEFUL_TIMEOUT_S), so the compose stack and the tests pick the address.
"""

from config import get_settings

_settings = get_settings()

bind = [_settings.web_bind]
workers = _settings.web_workers
# gthread: a synchronous prediction holds its thread while it waits for a worker.
worker_class = "gthread"
threads = _settings.web_threads
# SIGTERM (docker stop, honcho, systemd) stops accepting connections at once and lets
# the requests in flight finish for up to graceful_timeout; a synchronous prediction
# waits PREDICT_TIMEOUT_S at most, so the default leaves it room.
graceful_timeout = _settings.web_graceful_timeout_s
# A worker silent for longer is restarted; a request may wait PREDICT_TIMEOUT_S.
timeout = max(30, int(_settings.predict_timeout_s) + 10)
accesslog = "-"
errorlog = "-"
# gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl):
# a second server on the machine would take it over. Nothing here uses it.
control_socket_disable = True
