#!/usr/bin/env python3
"""One ICMP echo request to the guest over a raw socket, for qemu-check.sh's net check (iputils'
ping is not always installed). Prints "reply from ADDR, payload ok" or exits 1 after 3 s."""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main() -> int:
    target = sys.argv[1]
    ident, seq, payload = 0x1234, 7, b'ping from the host, 0123456789'
    head = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    packet = struct.pack('!BBHHH', 8, 0, checksum(head + payload), ident, seq) + payload
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(3)
    sock.sendto(packet, (target, 0))
    try:
        while True:
            data, addr = sock.recvfrom(2048)
            ihl = (data[0] & 15) * 4
            kind, _, _, rid, rseq = struct.unpack('!BBHHH', data[ihl:ihl + 8])
            if kind == 0 and rid == ident and rseq == seq:
                print(f"reply from {addr[0]}, payload {'ok' if data[ihl + 8:] == payload else 'differs'}")
                return 0
    except socket.timeout:
        print(f'no reply from {target}')
        return 1


if __name__ == '__main__':
    sys.exit(main())
