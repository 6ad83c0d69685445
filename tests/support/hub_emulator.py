#!/usr/bin/env python3
"""A Hugging Face Hub emulator for qpipe's CLI tests (python3 stdlib only).

Serves one directory as the model repository ORG/NAME on 127.0.0.1:
  GET /api/models/ORG/NAME/revision/REV   {"id", "sha", "siblings": [{"rfilename"[, "size"]}]}
                                           (sizes with ?blobs=true); REV: main or the commit
  GET|HEAD /ORG/NAME/resolve/REV/FILE      git files: 200, ETag = git blob id;
                                           LFS files (*.safetensors, *.model, >= 1 MiB): 302 to
                                           /cdn/SHA256 with X-Linked-Etag (sha256) and X-Linked-Size;
                                           both with X-Repo-Commit
  GET|HEAD /cdn/SHA256                     the bytes, Range: bytes=N- answered with 206
The commit id is the SHA-1 of the served (name, sha256) list.  Errors carry
X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub does.

Faults, set with POST /_control and a JSON object (each key optional):
  {"reset": true}                         clear every fault
  {"clear_log": true}                     empty the request log
  {"drop": {"file": F, "after": N}}       once: send N bytes of F's body, then close the connection
  {"corrupt": F}                          once: flip a byte of F's body
  {"require_token": T}                    401 for /api and /resolve without "Authorization: Bearer T"
  {"fail": {"status": S, "count": C, "retry_after": R}}   the next C requests answer S
  {"extra_sibling": NAME}                 list NAME too (a hostile listing: "../x", "/etc/x")
  {"move_main": SALT}                     main moves to a new commit (same files; the old commit is gone)
Every other request is logged as one JSON line {"method", "path", "range", "auth"} to
--log; "auth" is only whether an Authorization header came, never its value.
The port is written to --port-file once the server listens.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_MIN = 1 << 20


class Repo:
    def __init__(self, root, name, exclude):
        self.name = name
        self.files = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            dirnames[:] = sorted(d for d in dirnames
                                 if os.path.normpath(os.path.join(rel_dir, d)) not in exclude)
            for f in filenames:
                rel = os.path.normpath(os.path.join(rel_dir, f))
                if rel in exclude:
                    continue
                with open(os.path.join(dirpath, f), 'rb') as fh:
                    data = fh.read()
                self.files[rel] = data
        self.sha256 = {k: hashlib.sha256(v).hexdigest() for k, v in self.files.items()}
        self.by_sha = {self.sha256[k]: k for k in self.files}
        self.listing = ''.join('%s %s\n' % (k, self.sha256[k]) for k in sorted(self.files))
        self.move('')

    def move(self, salt):
        self.commit = hashlib.sha1((self.listing + salt).encode()).hexdigest()

    def is_lfs(self, rel):
        return rel.endswith(('.safetensors', '.model', '.bin')) or len(self.files[rel]) >= LFS_MIN

    def git_blob_id(self, rel):
        data = self.files[rel]
        return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


class State:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.reset()

    def reset(self):
        self.drop = None
        self.corrupt = None
        self.token = None
        self.fail = None
        self.extra_sibling = None

    def log(self, entry):
        with self.lock, open(self.log_path, 'a') as f:
            f.write(json.dumps(entry, sort_keys=True) + '\n')


def make_handler(repo, state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, fmt, *args):  # quiet: the request log is the record
            pass

        def reply(self, status, headers=None, body=b'', error_code=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if error_code:
                self.send_header('X-Error-Code', error_code)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(body)

        def error(self, status, code, msg):
            self.reply(status, {'Content-Type': 'application/json'},
                       json.dumps({'error': msg}).encode(), code)

        def do_POST(self):
            if self.path != '/_control':
                return self.error(404, None, 'not found')
            n = int(self.headers.get('Content-Length') or 0)
            ctl = json.loads(self.rfile.read(n) or b'{}')
            with state.lock:
                if ctl.get('reset'):
                    state.reset()
                if ctl.get('clear_log'):
                    open(state.log_path, 'w').close()
                if 'drop' in ctl:
                    state.drop = dict(ctl['drop'])
                if 'corrupt' in ctl:
                    state.corrupt = ctl['corrupt']
                if 'require_token' in ctl:
                    state.token = ctl['require_token']
                if 'fail' in ctl:
                    state.fail = dict(ctl['fail'])
                if 'move_main' in ctl:
                    repo.move(ctl['move_main'])
                if 'extra_sibling' in ctl:
                    state.extra_sibling = ctl['extra_sibling']
            self.reply(200, body=b'{}')

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            path = url.path
            state.log({'method': self.command, 'path': self.path,
                       'range': self.headers.get('Range'),
                       'auth': self.headers.get('Authorization') is not None})
            with state.lock:
                fail = state.fail
                if fail and fail.get('count', 0) > 0:
                    fail['count'] -= 1
                else:
                    fail = None
            if fail:
                h = {}
                if fail.get('retry_after') is not None:
                    h['Retry-After'] = str(fail['retry_after'])
                return self.reply(int(fail['status']), h, b'{"error":"injected"}')
            if path.startswith('/cdn/'):
                return self.cdn(path[5:])
            if state.token is not None and \
                    self.headers.get('Authorization') != 'Bearer ' + state.token:
                return self.error(401, None, 'Invalid credentials in Authorization header')
            prefix = '/api/models/'
            if path.startswith(prefix):
                return self.api(path[len(prefix):], url.query)
            return self.resolve(path)

        def api(self, rest, query):
            if not rest.startswith(repo.name + '/revision/'):
                return self.error(404, 'RepoNotFound', 'Repository not found')
            rev = urllib.parse.unquote(rest[len(repo.name + '/revision/'):])
            if rev not in ('main', repo.commit):
                return self.error(404, 'RevisionNotFound', 'Invalid rev id: ' + rev)
            blobs = 'blobs=true' in query.split('&')
            sib = []
            for k in sorted(repo.files):
                e = {'rfilename': k}
                if blobs:
                    e['size'] = len(repo.files[k])
                sib.append(e)
            if state.extra_sibling:
                sib.append({'rfilename': state.extra_sibling})
            body = json.dumps({'id': repo.name, 'sha': repo.commit, 'siblings': sib}).encode()
            self.reply(200, {'Content-Type': 'application/json'}, body)

        def resolve(self, path):
            head = '/' + repo.name + '/resolve/'
            if not path.startswith(head):
                return self.error(404, 'RepoNotFound', 'Repository not found')
            rest = path[len(head):]
            rev, _, rel = rest.partition('/')
            rev, rel = urllib.parse.unquote(rev), urllib.parse.unquote(rel)
            if rev not in ('main', repo.commit):
                return self.error(404, 'RevisionNotFound', 'Invalid rev id: ' + rev)
            if rel not in repo.files:
                return self.error(404, 'EntryNotFound', 'Entry not found')
            h = {'X-Repo-Commit': repo.commit}
            if repo.is_lfs(rel):
                sha = repo.sha256[rel]
                h.update({'ETag': '"%s"' % sha, 'X-Linked-Etag': '"%s"' % sha,
                          'X-Linked-Size': str(len(repo.files[rel])),
                          'Location': '/cdn/' + sha})
                return self.reply(302, h)
            h['ETag'] = '"%s"' % repo.git_blob_id(rel)
            self.body(rel, h)

        def cdn(self, sha):
            rel = repo.by_sha.get(sha)
            if rel is None:
                return self.error(404, None, 'no such object')
            self.body(rel, {'ETag': '"cdn-%s"' % sha[:16]})

        def body(self, rel, headers):
            data = repo.files[rel]
            start = 0
            rng = self.headers.get('Range')
            status = 200
            if rng and rng.startswith('bytes=') and rng.endswith('-'):
                start = int(rng[6:-1])
                if start >= len(data) and len(data) > 0:
                    return self.reply(416, {'Content-Range': 'bytes */%d' % len(data)})
                status = 206
                headers['Content-Range'] = 'bytes %d-%d/%d' % (start, len(data) - 1, len(data))
            part = data[start:]
            with state.lock:
                corrupt = state.corrupt == rel
                if corrupt:
                    state.corrupt = None
                drop = state.drop if state.drop and state.drop.get('file') == rel else None
                if drop:
                    state.drop = None
            if corrupt and part:
                part = bytes([part[0] ^ 1]) + part[1:]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Content-Length', str(len(part)))
            self.end_headers()
            if self.command == 'HEAD':
                return
            if drop:
                self.wfile.write(part[:int(drop['after'])])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(part)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--root', required=True, help='directory served as the repository')
    ap.add_argument('--repo', required=True, help='ORG/NAME')
    ap.add_argument('--exclude', action='append', default=[], help='relative path left out (repeatable)')
    ap.add_argument('--port-file', required=True)
    ap.add_argument('--log', required=True)
    a = ap.parse_args()
    repo = Repo(a.root, a.repo, {os.path.normpath(e) for e in a.exclude})
    state = State(a.log)
    open(a.log, 'w').close()
    srv = ThreadingHTTPServer(('127.0.0.1', 0), make_handler(repo, state))
    srv.daemon_threads = True
    tmp = a.port_file + '.tmp'
    with open(tmp, 'w') as f:
        f.write('%d %s\n' % (srv.server_address[1], repo.commit))
    os.replace(tmp, a.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
