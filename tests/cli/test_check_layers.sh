#!/usr/bin/env bash
# scripts/check-layers.sh: passes on the tree, and fails — naming file and
# line — on a copy of the tree where a lower layer includes a higher one, or
# where C sources appear in a directory that is not a layer.
. "$(dirname "$0")/lib.sh"

CHECK="$REPO/scripts/check-layers.sh"
expect_exit 0 bash "$CHECK" "$REPO"
expect_grep '^check-layers: ok'

# a copy of the layer directories only (sources are small)
copy_tree() {
  rm -rf "$T/tree"; mkdir -p "$T/tree"
  for d in common cache model quant artifact stages pipeline cli; do cp -r "$REPO/$d" "$T/tree/$d"; done
}

copy_tree
expect_exit 0 bash "$CHECK" "$T/tree"

# quant/ may include only common/: a model/ include is a layer break
f=$(ls "$T/tree/quant/"*.c | head -1)
echo '#include "model/llama.h"' >> "$f"
n=$(wc -l < "$f")
expect_exit 1 bash "$CHECK" "$T/tree"
expect_grep "quant/$(basename "$f"):$n: includes \"model/llama.h\""
expect_grep 'check-layers: 1 include'

# stages/ reaching up into pipeline/, and the library reaching into cli/
copy_tree
echo '#include "pipeline/recipe.h"' >> "$T/tree/stages/gate.c"
echo '# include "cli/cli.h"' >> "$T/tree/pipeline/runner.c"
expect_exit 1 bash "$CHECK" "$T/tree"
expect_grep 'stages/gate.c:[0-9]+: includes "pipeline/recipe.h": stages/ may include only'
expect_grep 'pipeline/runner.c:[0-9]+: includes "cli/cli.h"'
expect_grep 'check-layers: 2 include'

# common/ includes nothing of the project's
copy_tree
echo '#include "cache/cache.h"' >> "$T/tree/common/hash.c"
expect_exit 1 bash "$CHECK" "$T/tree"
expect_grep 'common/hash.c:[0-9]+: includes "cache/cache.h": common/ may include only nothing but itself'

# an unknown top-level directory of C code must be placed in the table
copy_tree
mkdir -p "$T/tree/extra" && echo 'int x;' > "$T/tree/extra/x.c"
expect_exit 1 bash "$CHECK" "$T/tree"
expect_grep '^extra/: C sources in a directory that is not a layer'

done_ok
