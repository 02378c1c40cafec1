# The end every framework image shares. The orchestrator appends this file to images/<name>/Dockerfile when that
# Dockerfile has no ENTRYPOINT (orchestrator/images.py), and passes WORKLOAD=<the framework's workload module>.
# By hand: cat images/<name>/Dockerfile images/tail.Dockerfile | docker build -f - --build-arg WORKLOAD=<module> .
# The part before it must end as root (an image FROM another project image says USER root). Few instructions on
# purpose: the legacy builder commits a layer for each, which costs minutes on top of a multi-GB image.
ARG WORKLOAD
# PYTHONPATH, not WORKDIR, makes `python3 -m workloads.<module>` find the workload from any directory.
ENV LSTM_BENCH_WORKLOAD=${WORKLOAD} PYTHONPATH=/opt/lstm-bench PYTHONDONTWRITEBYTECODE=1
COPY workloads/__init__.py workloads/harness.py workloads/${WORKLOAD}.py /opt/lstm-bench/workloads/
# The runtime user, then the import smoke test (no GPU during a build: this proves the packages and the workload
# import). An image whose import needs the GPU driver sets LSTM_BENCH_SMOKE to a statement that does not (mxnet's
# CUDA wheel). Caches the import writes (Theano, Keras, numba, XLA) go to a throw-away HOME and /tmp, removed.
RUN (id -u bench >/dev/null 2>&1 || useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin bench) \
    && cd /opt/lstm-bench && mkdir -p /tmp/lstm-bench-smoke \
    && HOME=/tmp/lstm-bench-smoke python3 -c "${LSTM_BENCH_SMOKE:-import workloads.$WORKLOAD}" \
    && find /tmp -mindepth 1 -delete
USER 10001
# The module comes from the environment (exec form cannot expand it); exec keeps python3 the signalled process.
ENTRYPOINT ["/bin/sh", "-c", "exec python3 -m \"workloads.$LSTM_BENCH_WORKLOAD\" \"$@\"", "lstm-bench"]
