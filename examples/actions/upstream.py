"""A stand-in payments API for the README's walk-through of declared actions.

    python3 examples/actions/upstream.py [PORT]        (default 9000; 0 picks a free port)

POST /pay with {"amount", "to"} and header X-Token: demo-token answers {"paid": amount, "to": to};
anything else answers 401 or 404. It prints "upstream: listening on http://127.0.0.1:PORT" once
it listens, and each request it gets on stderr.
"""
import http.server
import json
import sys


class Pay(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/pay":
            return self.answer(404, {"error": "no such path"})
        if self.headers.get("X-Token") != "demo-token":
            return self.answer(401, {"error": "bad token"})
        p = json.loads(body or b"{}")
        self.answer(200, {"paid": p.get("amount"), "to": p.get("to")})

    def answer(self, status, obj):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Pay)
print(f"upstream: listening on http://127.0.0.1:{srv.server_address[1]}", flush=True)
srv.serve_forever()
