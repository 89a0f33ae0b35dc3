#!/usr/bin/env bash
# Print the registry digest of every third-party image this repo pins by tag, so it can be pinned
# by digest too (`FROM image:tag@sha256:...` in images/*/Dockerfile, `image: ...@sha256:...` in
# manifests/). Needs Docker with buildx and registry access; this repo's CI machines have neither,
# which is why tags whose digest could not be confirmed are pinned by tag only.
# Uses `docker buildx imagetools inspect`, which reads the index digest without pulling the image.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker >/dev/null || { echo "pin-digests: docker not found" >&2; exit 1; }
docker buildx version >/dev/null 2>&1 || { echo "pin-digests: docker buildx not available" >&2; exit 1; }

# Every image reference after FROM / image:, without an existing @digest, de-duplicated.
mapfile -t refs < <(
  {
    grep -hE '^FROM ' images/*/Dockerfile | awk '{print $2}'
    grep -rhE '^\s*image:\s' manifests/ | awk '{print $2}'
  } | sed 's/@sha256:.*//' | sort -u
)

status=0
for ref in "${refs[@]}"; do
  if digest=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])'); then
    printf '%s@%s\n' "$ref" "$digest"
  else
    echo "pin-digests: could not resolve $ref" >&2
    status=1
  fi
done
exit "$status"
