# The one image of every application service in docker-compose.yml: migrate, web,
# worker-predict, worker-trades, beat and flower differ only by their command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: the OpenMP runtime XGBoost and LightGBM are linked against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. PyTorch's CPU index
# serves torch 2.13.0+cpu, which satisfies requirements.txt's pin without CUDA packages.
COPY requirements.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY . .

# Never root: the services need to write the spool and their metric files, nothing else.
RUN useradd --create-home --uid 10001 tradebot \
    && mkdir -p /app/model_store /app/data/trades /app/metrics \
    && chown -R tradebot:tradebot /app/data /app/metrics
USER tradebot

EXPOSE 5173 5555
CMD ["python", "-m", "web.server"]
