# free_port: prints a TCP port nothing listens on at 127.0.0.1 (sourced by
# the scripts that start servers for tests; a server that then fails to
# bind it because another process took it first fails its test loudly).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
