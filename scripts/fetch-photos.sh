#!/usr/bin/env bash
# Extracts the classic test photographs shipped in Debian's python3-skimage package (without installing it or its
# Python dependencies) into a folder, for rank analysis at 224² on real photographs.
# Usage: scripts/fetch-photos.sh [DEST]   (default: data/photos)
set -euo pipefail
dest="${1:-data/photos}"
photos=(astronaut.png coffee.png chelsea.png rocket.jpg motorcycle_left.png motorcycle_right.png
        hubble_deep_field.jpg retina.jpg camera.png)
if [ -d "$dest" ] && [ "$(ls "$dest" | wc -l)" -ge "${#photos[@]}" ]; then
  echo "fetch-photos: $dest already holds the photographs"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get download python3-skimage >/dev/null 2>&1 ) || {
  echo "fetch-photos: 'apt-get download python3-skimage' failed (run 'apt-get update' first?)" >&2; exit 1; }
dpkg-deb -x "$work"/python3-skimage_*.deb "$work/x"
src="$work/x/usr/lib/python3/dist-packages/skimage/data"
mkdir -p "$dest"
for p in "${photos[@]}"; do
  [ -f "$src/$p" ] && cp "$src/$p" "$dest/" || echo "fetch-photos: $p not in this python3-skimage" >&2
done
echo "fetch-photos: $(ls "$dest" | wc -l) photographs in $dest"
