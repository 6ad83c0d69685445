#!/bin/bash
# The layer rules of docs/architecture.md, checked over every #include "…"
# line of the tree: a directory may include only itself and the layers listed
# for it.  Run by `make test`; exits 1, one line per wrong include, when a
# lower layer reaches up (e.g. quant/ including model/, stages/ including
# pipeline/, the library including cli/).
#   usage: scripts/check-layers.sh [ROOT]   (default: the repository root)
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 1

# layer -> the project directories its files may include (besides itself)
declare -A may=(
    [common]=""
    [cache]="common"
    [model]="common"
    [quant]="common"
    [artifact]="common cache"
    [train]="common model quant"
    [stages]="common cache model quant train artifact"
    [pipeline]="common cache artifact stages"
    [cli]="common cache model quant train artifact stages pipeline"
)
layers="${!may[*]}"

bad=0
checked=0
# a new top-level directory of C code must be given a place in the table
for d in */; do
    d=${d%/}
    case " $layers tests bench build build-asan fuzz " in *" $d "*) continue ;; esac
    if compgen -G "$d/*.[ch]" > /dev/null; then
        echo "$d/: C sources in a directory that is not a layer: add it to scripts/check-layers.sh and docs/architecture.md" >&2
        bad=$((bad + 1))
    fi
done
for dir in $layers; do
    for f in "$dir"/*.c "$dir"/*.h "$dir"/*.inc; do
        [ -f "$f" ] || continue
        checked=$((checked + 1))
        # `#include "dir/file.h"` lines, with their line numbers
        while IFS=: read -r line inc; do
            target=${inc#*\"}
            target=${target%%\"*}
            case "$target" in
            */*) top=${target%%/*} ;;
            *) continue ;;            # same-directory include ("gemm_blocked.inc")
            esac
            [ "$top" = "$dir" ] && continue
            ok=0
            for allowed in ${may[$dir]}; do
                [ "$top" = "$allowed" ] && ok=1
            done
            if [ $ok = 0 ]; then
                if [ -z "${may[$top]+x}" ]; then
                    echo "$f:$line: includes \"$target\": $top/ is not a layer of docs/architecture.md" >&2
                else
                    echo "$f:$line: includes \"$target\": $dir/ may include only ${may[$dir]:-nothing but itself} (docs/architecture.md); move the code down a layer or pass it in" >&2
                fi
                bad=$((bad + 1))
            fi
        done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
    done
done
if [ $bad -gt 0 ]; then
    echo "check-layers: $bad include(s) break the layer rules ($checked files checked)" >&2
    exit 1
fi
echo "check-layers: ok ($checked files, layers: common cache model quant train artifact stages pipeline cli)"
