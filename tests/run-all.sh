#!/usr/bin/env bash
# Runs every cmocka test binary given as arguments, then every CLI test script
# tests/cli/*.sh (unless --unit-only), and prints one closing summary line
# "N passed, N failed".  Exit status 1 when anything failed.
set -u
unit_only=0
if [ "${1:-}" = "--unit-only" ]; then unit_only=1; shift; fi
passed=0; failed=0; failures=()
for t in "$@"; do
  log=$(mktemp)
  if "$t" >"$log" 2>&1; then
    passed=$((passed+1)); echo "PASS $t"
  else
    failed=$((failed+1)); failures+=("$t"); echo "FAIL $t"
    grep -E '\[  (ERROR|FAILED) +\]|\[   LINE   \]|FAIL:' "$log" | head -20 | sed 's/^/    /'
    sed 's/^/    /' "$log" | tail -30
  fi
  rm -f "$log"
done
if [ $unit_only -eq 0 ]; then
  for s in tests/cli/test_*.sh; do
    [ -e "$s" ] || continue
    log=$(mktemp)
    if bash "$s" >"$log" 2>&1; then
      passed=$((passed+1)); echo "PASS $s"
    else
      failed=$((failed+1)); failures+=("$s"); echo "FAIL $s"
      grep -E 'FAIL:|ERROR' "$log" | head -20 | sed 's/^/    /'
      sed 's/^/    /' "$log" | tail -30
    fi
    rm -f "$log"
  done
fi
for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
