# GPU environment for the whole pipeline.
#   docker build -t dfdc .
#   docker run --gpus all --ipc=host -v /path/to/dfdc:/data:ro -v /path/to/work:/repo/work \
#       -v /path/to/weights:/repo/weights dfdc bash run_all.sh /data
# The official PyTorch CUDA runtime image gives Python, the CUDA runtime and cuDNN;
# requirements.txt then installs the exact pins (its torch wheel brings its own CUDA libraries).
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENV=/opt/venv
WORKDIR /repo

# The same set-up as on a laptop: a virtual environment with requirements.txt, made once
# here so that run_all.sh / run_tests.sh find it ready (scripts/ensure_venv.sh).
COPY requirements.txt scripts/ensure_venv.sh /repo/
RUN mkdir -p scripts && mv ensure_venv.sh scripts/ && bash scripts/ensure_venv.sh
ENV PATH=/opt/venv/bin:$PATH

COPY . /repo
CMD ["bash", "run_all.sh"]
