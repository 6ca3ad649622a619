#!/usr/bin/env bash
# Bundles the Worker of an earlier commit (the version before this one, for the skew tests) into
# test/skew/previous.worker.js, as `wrangler deploy --dry-run` bundles it for a deploy.
#   test/skew/make-previous.sh <commit>
set -euo pipefail
commit=${1:?usage: test/skew/make-previous.sh <commit>}
root=$(cd "$(dirname "$0")/../.." && pwd)
tree=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tree"; rm -rf "$tree.out"' EXIT
git -C "$root" worktree add --detach -q "$tree" "$commit"
ln -s "$root/node_modules" "$tree/node_modules"
(cd "$tree" && WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false npx wrangler deploy --dry-run --outdir "$tree.out" >/dev/null)
{
  echo "// The Worker of commit $(git -C "$root" rev-parse --short "$commit"), bundled by test/skew/make-previous.sh: the version before this one."
  grep -v '^//# sourceMappingURL=' "$tree.out/index.js"
} > "$root/test/skew/previous.worker.js"
echo "test/skew/previous.worker.js: the Worker of $commit"
