# The image every cluster.yaml node runs Ray in (docs/cluster-image.md): the project and requirements.lock,
# the same versions `make setup` installs and the tests run on.
#   docker build -t unlearning-grid:0.1.0 .
# tests/test_image.py lints this file (hadolint) and checks it against requirements.lock and cluster.yaml.

# CUDA 13.0 (cudart 13.0.96 = requirements.lock's nvidia-cuda-runtime): torch 2.14.1's cu13 wheels bring
# their own CUDA libraries; the base image adds NVIDIA_REQUIRE_CUDA, so the NVIDIA container runtime refuses
# a host driver too old for CUDA 13 at `docker run`, and NVIDIA_DRIVER_CAPABILITIES puts nvidia-smi in.
# Ubuntu 22.04: its own python3.11 (Ubuntu 24.04 has none).
FROM nvidia/cuda:13.0.2-base-ubuntu22.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What Ray's cluster launcher (DockerCommandRunner, Ray 2.60) needs inside the container: bash (its
# commands run in `docker exec ... /bin/bash -c`), rsync (it copies ~/ray_bootstrap_config.yaml and the
# SSH key in with `rsync -e 'docker exec -i'`), openssh-client (the head's autoscaler, in this container,
# reaches the workers' hosts over SSH), sudo (its fallback when a copied file is not readable), tmux
# (`ray exec --tmux`, `ray attach --tmux`); curl for the health checks of cluster.yaml's commands.
# Packages are pinned by release (the base image's Ubuntu 22.04) and by major version in the name
# (python3.11): Ubuntu replaces exact versions with security updates and drops the old ones from its
# archive, so exact `=version` pins would break the build within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl openssh-client python3.11 python3.11-venv rsync sudo tmux \
    && rm -rf /var/lib/apt/lists/*

# A non-root user as on the nodes' hosts: `ubuntu`, uid 1000, the owner of the files Ray copies to the host
# and bind-mounts in (~/.ray/auth_token), with passwordless sudo as Ray's own images have. HOME is set in
# the image's environment because that is where Ray reads it (`docker inspect .Config.Env`): `~/` in
# cluster.yaml's file_mounts and commands means /home/ubuntu inside the container too.
RUN useradd --create-home --uid 1000 --shell /bin/bash ubuntu \
    && echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ubuntu \
    && chmod 0440 /etc/sudoers.d/ubuntu
# by number: a name may not resolve on the host (hadolint DL3066)
USER 1000:1000
ENV HOME=/home/ubuntu
WORKDIR /home/ubuntu

# ~/venv: the path cluster.yaml's commands use (~/venv/bin/ray, ~/venv/bin/python)
ENV PATH=/home/ubuntu/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /home/ubuntu/venv

# The lock alone first: this layer (torch and its CUDA wheels, most of the image) is rebuilt only when the
# lock changes.
COPY --chown=ubuntu:ubuntu requirements.lock /home/ubuntu/unlearning-grid/requirements.lock
RUN python -m pip install --no-cache-dir -r /home/ubuntu/unlearning-grid/requirements.lock

# The project: --no-deps, so it adds nothing to the lock; --no-build-isolation, so its build backend is the
# lock's setuptools rather than one fetched unpinned; then pip check over everything installed.
COPY --chown=ubuntu:ubuntu pyproject.toml README.md LICENSE /home/ubuntu/unlearning-grid/
COPY --chown=ubuntu:ubuntu analysis /home/ubuntu/unlearning-grid/analysis
COPY --chown=ubuntu:ubuntu trainables /home/ubuntu/unlearning-grid/trainables
COPY --chown=ubuntu:ubuntu grid /home/ubuntu/unlearning-grid/grid
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation /home/ubuntu/unlearning-grid \
    && python -m pip check \
    && unlearn-grid --help > /dev/null

# Ray's launcher starts the container with `bash` as its command and runs everything through `docker exec`.
CMD ["bash"]
