"""Helper programs remote/tests/campus.rs runs inside its namespaces (python3, stdlib only).

Every socket operation has a timeout, so each mode ends on its own. Modes:
  echo HOST PORT                 UDP echo server (campus); prints "ready" once bound
  udp PROXY_PORT HOST PORT N IP  SOCKS5 UDP ASSOCIATE via 127.0.0.1:PROXY_PORT (home); N datagrams
                                 to HOST:PORT; a reply counts when its RFC 1928 section 7 header
                                 is RSV=0, FRAG=0, ATYP=1 and names IP:PORT (the echo server),
                                 and its data is the datagram's; prints "echoed K of N" (it
                                 stops early once more than 5 % are lost)
  bind PROXY_PORT HOST           SOCKS5 BIND for HOST:0 via 127.0.0.1:PROXY_PORT (home); prints
                                 "first ADDR:PORT", "second ADDR:PORT", then swaps a line with the
                                 peer and prints "got LINE"
  peer SRC HOST PORT             connects from SRC to HOST:PORT (campus); prints "local ADDR:PORT",
                                 swaps a line with the BIND client and prints "got LINE"
"""
import socket
import struct
import sys

TIMEOUT = 10


def say(*words):
    print(*words, flush=True)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def address(host, port):
    """SOCKS5 ATYP + address + port for a dotted IPv4 literal or a name."""
    try:
        return b"\x01" + socket.inet_aton(host) + struct.pack(">H", port)
    except OSError:
        name = host.encode()
        return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


def read_reply(sock):
    """One SOCKS5 reply (RFC 1928 section 6): (REP, "ADDR:PORT")."""
    ver, rep, _rsv, atyp = recv_exact(sock, 4)
    if ver != 5:
        raise ValueError("reply version %d" % ver)
    if atyp == 1:
        host = socket.inet_ntoa(recv_exact(sock, 4))
    elif atyp == 4:
        host = "[%s]" % socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16))
    else:
        host = recv_exact(sock, recv_exact(sock, 1)[0]).decode()
    (port,) = struct.unpack(">H", recv_exact(sock, 2))
    return rep, "%s:%d" % (host, port)


def request(proxy_port, cmd, host, port):
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT)
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise ValueError("no-auth method refused")
    sock.sendall(b"\x05" + bytes([cmd]) + b"\x00" + address(host, port))
    rep, bound = read_reply(sock)
    if rep != 0:
        raise ValueError("request refused: REP %d" % rep)
    return sock, bound


def echo(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    say("ready")
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def udp(proxy_port, host, port, count, ip):
    port, count = int(port), int(count)
    control, bound = request(int(proxy_port), 3, "0.0.0.0", 0)
    relay_host, relay_port = bound.rsplit(":", 1)
    relay = (relay_host, int(relay_port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(1.0)
    expected_source = b"\x00\x00\x00\x01" + socket.inet_aton(ip) + struct.pack(">H", port)
    echoed = 0
    for i in range(count):
        data = b"datagram %03d " % i + bytes([i % 256]) * 200
        client.sendto(b"\x00\x00\x00" + address(host, port) + data, relay)
        try:
            # A late answer to an earlier datagram is skipped; a wrong header is reported.
            while True:
                reply, _ = client.recvfrom(65535)
                if reply == expected_source + data:
                    echoed += 1
                    break
                if reply.endswith(data):
                    say("bad reply header: %r" % reply[: len(reply) - len(data)])
                    break
        except socket.timeout:
            pass
        if i + 1 - echoed > count // 20:
            break  # the check needs 95 %: stop early rather than wait out every loss
    control.close()
    say("echoed %d of %d" % (echoed, count))


def bind(proxy_port, host):
    control, first = request(int(proxy_port), 2, host, 0)
    say("first", first)
    rep, second = read_reply(control)
    if rep != 0:
        raise ValueError("second reply REP %d" % rep)
    say("second", second)
    control.sendall(b"from home\n")
    say("got", recv_exact(control, len(b"from the intranet\n")).decode().strip())


def peer(src, host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((src, 0))
    sock.connect((host, int(port)))
    say("local %s:%d" % sock.getsockname())
    sock.sendall(b"from the intranet\n")
    say("got", recv_exact(sock, len(b"from home\n")).decode().strip())


if __name__ == "__main__":
    {"echo": echo, "udp": udp, "bind": bind, "peer": peer}[sys.argv[1]](*sys.argv[2:])
