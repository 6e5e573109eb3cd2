"""TCP and UDP echo probes for the namespace tests, run inside a test namespace with
``ip netns exec``:

    netprobe.py serve PORT...          echo on TCP and UDP on each PORT until killed
    netprobe.py probe tcp|udp IP PORT  exit 0 when the echo comes back within a second
"""

import socket
import sys
import threading


def _tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        with c:
            c.settimeout(2)
            try:
                c.sendall(c.recv(64))
            except OSError:
                pass


def _udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(64)
        s.sendto(data, peer)


def serve(ports):
    for p in ports:
        for f in (_tcp, _udp):
            threading.Thread(target=f, args=(p,), daemon=True).start()
    print("serving", flush=True)
    threading.Event().wait()


def probe(proto, ip, port):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(1.0)
        try:
            if proto == "tcp":
                s.connect((ip, port))
                s.sendall(b"romana")
                return s.recv(64) == b"romana"
            s.sendto(b"romana", (ip, port))
            return s.recvfrom(64)[0] == b"romana"
        except OSError:
            return False


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    else:
        sys.exit(0 if probe(sys.argv[2], sys.argv[3], int(sys.argv[4])) else 1)
