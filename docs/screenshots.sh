#!/usr/bin/env bash
# Open the built site in headless Chromium and take screenshots of the home page, the API
# reference, the getting-started page, two how-tos with long code lines (they wrap with a hanging
# indent) and the errors table (no word is cut)
# (make screenshots). Needs Debian's chromium package: apt-get install chromium.
set -euo pipefail
site=${1:-site}
out=${2:-site-screenshots}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: apt-get install chromium" >&2
  exit 1
fi
mkdir -p "$out"
root=$(cd "$site" && pwd)
shoot() {  # page, file, height
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,"$3" \
    --screenshot="$out/$2" "file://$root/$1" >/dev/null 2>&1
  test -s "$out/$2" && echo "wrote $out/$2"
}
shoot index.html home.png 1400
shoot api/index.html api.png 2200
shoot getting-started/index.html getting-started.png 1600
shoot howto/study/index.html howto-study.png 2600
shoot howto/huggingface/index.html howto-huggingface.png 2400
shoot errors/index.html errors.png 2000
