# One image for every component, one process per container: `spendgate proxy ...`, `spendgate
# operator ...`, `spendgate injector ...` (the chart's args; the tests run the same entry points).
# The base is pinned by digest (Dependabot proposes updates: .github/dependabot.yml); both stages
# use the same one so the wheels match the interpreter they are installed into.
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY operator operator
COPY proxy proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The wheels are exactly what the build stage resolved; nothing else is installed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# A numeric non-root user (the chart's runAsUser), no home, no shell login.
USER 65532:65532
ENTRYPOINT ["spendgate"]
CMD ["--help"]
