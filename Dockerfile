# Serving image: only what `offers serve` needs (the `serve` extra), run as a non-root user.
# Build:  docker build -t loyalty-offers .
# Run:    docker run -p 8000:8000 -e OFFERS_API_KEYS='{"...": ["offers:read"]}' loyalty-offers
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY features ./features
COPY models ./models
COPY serving ./serving
COPY training ./training
COPY offers ./offers
RUN pip install --no-cache-dir --prefix=/install ".[serve]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 offers
COPY --from=build /install /usr/local
USER offers
WORKDIR /home/offers
ENV OFFERS_HOME=/home/offers/.offers \
    OPENBLAS_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["offers", "serve", "--host", "0.0.0.0", "--port", "8000"]
