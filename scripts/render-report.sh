#!/usr/bin/env bash
# Renders a report.html (from `rala report`) to a PNG with headless Chromium, to look at the page as a browser shows it.
#   scripts/render-report.sh REPORT_DIR/report.html [OUT.png] [WIDTH]      (defaults: report.png beside it, 1280)
# Needs Debian's `chromium` package (apt-get install chromium). Not part of the test suite.
set -euo pipefail
html=${1:?usage: scripts/render-report.sh report.html [out.png] [width]}
png=${2:-$(dirname "$html")/report.png}
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "render-report: chromium not found; install the Debian package: apt-get install chromium" >&2
  exit 1
fi
[ -f "$html" ] || { echo "render-report: no such file: $html" >&2; exit 1; }
abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
png_abs=$(cd "$(dirname "$png")" && pwd)/$(basename "$png")
# A tall window so the whole page lands in one screenshot (Chromium's headless screenshot is the window, not the page).
height=${RENDER_HEIGHT:-12000}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size="$width,$height" --screenshot="$png_abs" "file://$abs" 2>/dev/null
echo "render-report: $png_abs (${width}x${height})"
