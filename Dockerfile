# The `sealgate` entrypoint for GitLab and any container CI. Every Python dependency is
# hash-pinned (requirements/action.txt); the project itself is installed with --no-deps.
FROM python:3.11-slim-bookworm

# p11-kit-modules ships p11-kit-client.so, the client of a remote HSM exported by `p11-kit server`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git p11-kit p11-kit-modules \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sealgate/src
COPY requirements/action.txt /opt/sealgate/requirements.txt
RUN python -m venv /opt/sealgate/venv \
    && /opt/sealgate/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --only-binary :all: -r /opt/sealgate/requirements.txt
COPY pyproject.toml README.md ./
COPY signer ./signer
COPY integrity ./integrity
COPY sealgate ./sealgate
RUN /opt/sealgate/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation --no-index . \
    && useradd --create-home --uid 10001 --user-group sealgate

ENV PATH=/opt/sealgate/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /workspace
ENTRYPOINT ["sealgate"]
CMD ["--help"]
