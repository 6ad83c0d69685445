# A WebDAV (PUT) nginx on 127.0.0.1 for the remote-cache tests, sourced:
#   start_nginx [DIRECTIVES]   serves $NG/root on a free port; sets PORT and
#                              URL=http://127.0.0.1:$PORT/qp (DIRECTIVES go
#                              in its location block, e.g. auth_basic)
#   stop_nginx                 stops it
# NG (a directory) must be set; NGINX is the binary (nginx, Debian package).
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
source "$(dirname "${BASH_SOURCE[0]}")/free-port.sh"

start_nginx() {
  mkdir -p "$NG/root" "$NG/tmp" "$NG/logs"
  PORT=$(free_port)
  local user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat > "$NG/nginx.conf" <<C
$user
worker_processes 2;
daemon on;
pid $NG/nginx.pid;
error_log $NG/logs/error.log;
events { worker_connections 256; }
http {
  access_log $NG/logs/access.log;
  client_body_temp_path $NG/tmp/body;
  proxy_temp_path $NG/tmp/proxy;
  fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi;
  scgi_temp_path $NG/tmp/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$PORT;
    root $NG/root;
    location / {
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      ${1:-}
    }
  }
}
C
  "$NGINX" -c "$NG/nginx.conf" -p "$NG/" 2>"$NG/start.err" || { cat "$NG/start.err" >&2; fail "nginx did not start"; }
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  URL="http://127.0.0.1:$PORT/qp"
}

stop_nginx() {
  [ -f "$NG/nginx.pid" ] || return 0
  local pid; pid=$(cat "$NG/nginx.pid")
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$NG/nginx.pid"
}
