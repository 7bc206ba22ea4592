#!/usr/bin/env bash
# Build the runwire server image from deploy/Containerfile; push it with PUSH=1.
#
# Needs podman and mmdebstrap (Debian: apt-get install podman mmdebstrap) and
# no image registry: the Debian base is made here with mmdebstrap from Debian's
# own packages, then imported. A CI with a registry runs this unchanged:
#
#   IMAGE=registry.example.com/runwire:1.2.3 PUSH=1 deploy/build-image.sh
#
# Environment:
#   IMAGE        the tag to build (default localhost/runwire:<version>-<commit>)
#   PUSH=1       push IMAGE when built (registry login is the caller's)
#   BASE         use this base image instead of making one: any Debian bookworm
#                image with python3.11, python3.11-venv and ca-certificates
#   SUITE        Debian suite of the made base (default bookworm: Python 3.11)
#   MIRROR       Debian mirror for mmdebstrap (default: its own)
#   SMOKE=0      skip the check that the image runs (`runwire --version`, and
#                that serve refuses to start without DATABASE_URL)
#   PODMAN_RUN_FLAGS  extra `podman run` flags for that check (e.g. --runtime runc)
#   PIP_CERT     a CA bundle pip inside the build trusts (for a TLS-intercepting
#                proxy); passed as a build secret, never stored in the image
set -euo pipefail

cd "$(dirname "$0")/.."
SUITE=${SUITE:-bookworm}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE=${IMAGE:-localhost/runwire:${VERSION}-${COMMIT}}
PACKAGES=python3.11,python3.11-venv,ca-certificates
WORK=.runwire/image
# Build steps run chrooted (buildah's chroot isolation): no OCI runtime,
# cgroups or user namespaces needed, which CI containers often lack.
BUILD_FLAGS=(--isolation chroot --pull=never --layers=false)

say() { printf 'build-image: %s\n' "$*"; }

if [[ -z ${BASE:-} ]]; then
	# The base is named after what it is made of, so a change remakes it.
	key=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "${MIRROR:-}" | sha256sum | cut -c1-12)
	BASE=localhost/runwire-base:${SUITE}-${key}
	if ! podman image exists "$BASE"; then
		mkdir -p "$WORK"
		say "making the base $BASE with mmdebstrap ($SUITE: $PACKAGES)"
		mmdebstrap --quiet --variant=apt --include="$PACKAGES" "$SUITE" "$WORK/base.tar" ${MIRROR:+"$MIRROR"}
		podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
		rm -f "$WORK/base.tar"
	fi
fi
say "base $BASE"

# A CA bundle for pip inside the build (a TLS-intercepting proxy), if PIP_CERT names one.
mkdir -p "$WORK"
cert=$WORK/no-pip-cert.pem
: >"$cert"
[[ -n ${PIP_CERT:-} && -f ${PIP_CERT:-} ]] && cert=$PIP_CERT

say "building $IMAGE"
podman build "${BUILD_FLAGS[@]}" --file deploy/Containerfile --build-arg "BASE=$BASE" \
	--secret "id=pip-cert,src=$cert" \
	--label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.revision=$COMMIT" \
	--tag "$IMAGE" .
podman image inspect "$IMAGE" --format \
	'build-image: built {{.Id}} ({{.Size}} bytes) user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}}'

if [[ ${SMOKE:-1} != 0 ]]; then
	# shellcheck disable=SC2086 # PODMAN_RUN_FLAGS is a list of flags
	say "runs: $(podman run --rm ${PODMAN_RUN_FLAGS:-} "$IMAGE" --version)"
	set +e
	# shellcheck disable=SC2086
	refusal=$(podman run --rm ${PODMAN_RUN_FLAGS:-} "$IMAGE" serve 2>&1)
	code=$?
	set -e
	if [[ $code == 0 || $refusal != *DATABASE_URL* ]]; then
		say "expected serve to refuse to start without DATABASE_URL, got exit $code: $refusal" >&2
		exit 1
	fi
	say "without DATABASE_URL serve exits $code: $refusal"
fi

if [[ ${PUSH:-0} == 1 ]]; then
	say "pushing $IMAGE"
	podman push "$IMAGE"
fi
