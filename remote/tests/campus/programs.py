"""Helper program remote/tests/campus_programs.rs runs inside its namespaces (python3, stdlib
only). Every socket operation has a timeout, so each mode ends on its own. Modes:
  udpcount HOST PORT N [BIND]
                         sends N numbered datagrams from home (bound to BIND, default
                         127.0.0.1) to HOST:PORT (warren-local's UDP forward, or a campus
                         address caught by TPROXY), each answer awaited at most 1 s, then
                         late answers for 2 s more; prints "echoed K of N", K the number of
                         distinct datagrams that came back unchanged
"""
import socket
import sys
import time


def payload(i):
    return b"datagram %03d " % i + bytes([i % 256]) * 200


def udpcount(host, port, count, bind="127.0.0.1"):
    port, count = int(port), int(count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 0))
    sent = {payload(i): i for i in range(count)}
    seen = set()

    def take(reply):
        if reply in sent:
            seen.add(sent[reply])
        else:
            print("unexpected reply: %r" % reply[:40], flush=True)

    for i in range(count):
        sock.settimeout(1.0)
        sock.sendto(payload(i), (host, port))
        try:
            # Late answers to earlier datagrams count too; wait for this one's.
            while i not in seen:
                take(sock.recvfrom(65535)[0])
        except socket.timeout:
            pass
    deadline = time.monotonic() + 2.0
    while len(seen) < count and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            take(sock.recvfrom(65535)[0])
        except socket.timeout:
            break
    print("echoed %d of %d" % (len(seen), count), flush=True)


if __name__ == "__main__":
    {"udpcount": udpcount}[sys.argv[1]](*sys.argv[2:])
