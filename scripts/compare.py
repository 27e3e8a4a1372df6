#!/usr/bin/env python3
"""make compare: the original C programs and this port, in the four pairings, side by side.

Runs the C client and the Rust client against the C server and the Rust server (the Rust
server with --demo, so all four use the original's account aticle / 123), one pairing after
another, each on its own free port on 127.0.0.1 with a fresh server. For each pairing it
prints both transcripts, the SHA-256 of the request and of the reply, and how the transcripts
differ from the reference pairing (C client, C server). Every difference must be explained by
a row of the README's table "Where the port differs from the original, and why": the rules
below name their row by its first cell, and the script reads the table to check that the row
exists and to print it. Exit status 0 when everything matches or is explained, 1 when
anything is not, 2 when the comparison could not be run.

What is hashed, and from where:
- the project's C programs (compare/server.c, compare/client.c) save the exact bytes they
  wrote and read to files in COMPARE_WIRE_DIR: those are the bytes inside TLS on the wire;
- the Rust programs and the user's own builds (ORIG_SERVER, ORIG_CLIENT) are not asked to
  save anything: their messages are hashed as their transcripts print them (the server's
  `Client msg: "..."`, the client's `Received: "..."`), which is labelled "printed".
Each hash is checked against the figures of docs/LEGACY.md.

Usage: scripts/compare.py --rust-bin DIR --c-server PATH --c-client PATH [--work DIR]
(ORIG_SERVER / ORIG_CLIENT in the environment stand for --c-server / --c-client builds of
the original; those are not asked to save wire bytes.)
"""

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# docs/LEGACY.md: the request for aticle / 123 and the reply to it (src/xml/legacy.rs checks
# the same figures).
REQUEST_SHA256 = "0a4f49d91dd1b7f54d6e6dd47167721606982f44861fed14d056eee38eae3a53"
REPLY_SHA256 = "36ff59446645fc9185af59fbc71f4b47216a987b55abef5272944c68b27a98bb"
USER, PASSWORD = "aticle", "123"

README_SECTION = "## Where the port differs from the original, and why"

# How long anything may take before the comparison gives up on it.
START_WAIT = 15.0
CLIENT_WAIT = 15.0
STOP_WAIT = 5.0


def mask_password(line):
    """The original's `Client msg` line as the port prints it: the password as ***."""
    return re.sub(r"<Password>.*?<Password>", "<Password>***<Password>", line, count=1)


# The differences the README's table explains, as rules: (the first cell of the README row,
# which transcript, a test that the reference line became the observed line for that reason).
# A difference the table explains but that does not show in these four transcripts (threads,
# root, close_notify, IPv6, ...) needs no rule. Adding a rule means adding its row to the
# README table; the script refuses to run if the row is missing.
EXPLAINED = [
    (
        "Prints the password in `Client msg`",
        "server",
        lambda ref, got: ref.startswith('Client msg: "') and mask_password(ref) == got,
    ),
]

# Processes still running, stopped whatever happens.
RUNNING = []


def readme_rows():
    """The README's table of differences: {first cell: (original, port, why)}."""
    lines = (ROOT / "README.md").read_text().splitlines()
    try:
        start = lines.index(README_SECTION)
    except ValueError:
        raise RuntimeError(f"README.md has no section {README_SECTION!r}")
    rows, in_table = {}, False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            in_table = True
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0] != "original" and not set(cells[0]) <= set("-: "):
                rows[cells[0]] = tuple(cells)
        elif in_table:
            break
    return rows


PORTS_TAKEN = 0


def free_port():
    """A free port on 127.0.0.1, from below the ports the system gives outgoing connections
    (the tests beside this script open thousands), in an order of this process's own; a port
    the system chooses if too few lie below that range (as tests/support/postgres.rs)."""
    span = 10_000
    try:
        start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        start = 32_768
    global PORTS_TAKEN
    ports = []
    if start > span + 1024:
        offset = (os.getpid() * 7_919 + PORTS_TAKEN) % span
        ports = [start - span + (offset + step) % span for step in range(span)]
    PORTS_TAKEN += 1
    for port in ports + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def listening(port):
    """Whether something listens on TCP `port` (read from /proc, without connecting: the C
    server would take a probe for a client and print it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


def stop(proc):
    """Stops `proc` and its process group: SIGTERM, then SIGKILL after STOP_WAIT."""
    if proc in RUNNING:
        RUNNING.remove(proc)
    for sig, wait in ((signal.SIGTERM, STOP_WAIT), (signal.SIGKILL, STOP_WAIT)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def line_buffered(command, own):
    """The user's own build prints with printf to a file: make its stdout line-buffered so
    that stopping it loses nothing (stdbuf; the project's programs need no help)."""
    if not own and shutil.which("stdbuf"):
        return ["stdbuf", "-oL"] + command
    return command


class Program:
    """One of the four programs: how to run it and what to call it."""

    def __init__(self, kind, role, path, own):
        # Absolute: the programs run in their pairing's directory.
        self.kind, self.role, self.own = kind, role, own
        self.path = str(Path(path).resolve()) if os.sep in str(path) else shutil.which(path) or path

    @property
    def label(self):
        origin = "" if self.own or self.kind == "Rust" else f" ({self.path})"
        return f"{self.kind} {self.role}{origin}"

    @property
    def saves_wire(self):
        return self.kind == "C" and self.own


def start_server(server, workdir, port):
    if server.kind == "Rust":
        command = [server.path, "--demo", "--bind", "127.0.0.1", "--db", "users.db", str(port)]
    else:
        command = line_buffered([server.path, str(port)], server.own)
    env = dict(os.environ)
    if server.saves_wire:
        env["COMPARE_WIRE_DIR"] = str(workdir / "wire")
    with open(workdir / "server.out", "wb") as out, open(workdir / "server.err", "wb") as err:
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )
    RUNNING.append(proc)
    deadline = time.monotonic() + START_WAIT
    # Its own process must be running, not just something on the port.
    while proc.poll() is not None or not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            said = " ".join((workdir / name).read_text(errors="replace").strip()
                            for name in ("server.out", "server.err"))
            raise RuntimeError(f"{server.label} did not start listening on {port}: {said}")
        time.sleep(0.05)
    return proc


def run_client(client, workdir, port):
    if client.kind == "Rust":
        command = [client.path, "--cafile", "mycert.pem", "127.0.0.1", str(port)]
    else:
        command = line_buffered([client.path, "127.0.0.1", str(port)], client.own)
    env = dict(os.environ)
    if client.saves_wire:
        env["COMPARE_WIRE_DIR"] = str(workdir / "wire")
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    RUNNING.append(proc)
    try:
        out, err = proc.communicate(f"{USER}\n{PASSWORD}\n".encode(), timeout=CLIENT_WAIT)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"{client.label} did not finish within {CLIENT_WAIT:.0f} s")
    RUNNING.remove(proc)
    return proc.returncode, out, err


def printed_message(transcript, prefix):
    """The message a transcript prints as `prefix"..."`, as bytes (None if absent)."""
    for line in transcript.split(b"\n"):
        if line.startswith(prefix + b'"') and line.endswith(b'"'):
            return line[len(prefix) + 1 : -1]
    return None


def read_file(path):
    """The bytes of `path`, or None if the program did not write it."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def run_pairing(client, server, workdir):
    """Runs one pairing; returns its transcripts and the hashes of what was sent."""
    (workdir / "wire").mkdir(parents=True)
    shutil.copy2(workdir.parent / "mycert.pem", workdir / "mycert.pem")
    port = free_port()
    proc = start_server(server, workdir, port)
    try:
        status, client_out, client_err = run_client(client, workdir, port)
        # The server prints its last line before it replies; the client has its reply.
    finally:
        stop(proc)
    server_out = (workdir / "server.out").read_bytes()
    # (message, where it was seen, its bytes or None)
    request_printed = printed_message(server_out, b"Client msg: ")
    reply_printed = printed_message(client_out, b"Received: ")
    wire = workdir / "wire"
    hashes = []
    if client.saves_wire:
        hashes.append(("request", "wire: written by the C client", wire / "client-request.bin"))
    if server.saves_wire:
        hashes.append(("request", "wire: read by the C server", wire / "server-request.bin"))
    hashes.append(("request", "printed: server's Client msg", request_printed))
    if server.saves_wire:
        hashes.append(("reply", "wire: written by the C server", wire / "server-reply.bin"))
    if client.saves_wire:
        hashes.append(("reply", "wire: read by the C client", wire / "client-reply.bin"))
    hashes.append(("reply", "printed: client's Received", reply_printed))
    hashes = [
        (what, where, read_file(data) if isinstance(data, Path) else data)
        for what, where, data in hashes
    ]
    return {
        "status": status,
        "client": client_out.decode(errors="replace"),
        "client_err": client_err.decode(errors="replace"),
        "server": server_out.decode(errors="replace"),
        "server_err": (workdir / "server.err").read_text(errors="replace"),
        "hashes": hashes,
    }


def normalise(transcript):
    """Lines of a transcript, the client's port (new on every connection) as PORT."""
    text = re.sub(r"^(Connection: 127\.0\.0\.1):\d+$", r"\1:PORT", transcript, flags=re.M)
    return text.split("\n")


def differences(side, reference, observed, rows):
    """(line, explanation or None) for each line of `observed` that differs from `reference`."""
    ref, got = normalise(reference), normalise(observed)
    if len(ref) != len(got):
        return [(f"{side}: {len(got)} lines where the reference has {len(ref)}", None)]
    found = []
    for a, b in zip(ref, got):
        if a == b:
            continue
        reason = next((key for key, where, test in EXPLAINED if where == side and test(a, b)), None)
        found.append((f"{side} line\n      was: {a}\n      now: {b}", reason and rows[reason]))
    return found


def check_hashes(result, rows):
    """Hash lines to print, and the hashes that are neither the documented figures nor
    explained (the Rust server's masked Client msg is, by the README's first row)."""
    printed, unexplained = [], []
    masked_request = mask_password(
        f"<Body>{' ' * 31}<UserName>{USER}<UserName>{' ' * 17}<Password>{PASSWORD}<Password>"
        f"{' ' * 17}<\\Body>"
    ).encode()
    for what, where, data in result["hashes"]:
        if data is None:
            printed.append(f"  {what:7} {'-':>4}   (missing)  {where}")
            unexplained.append(f"{what}: nothing {where.split(': ', 1)[1]}")
            continue
        digest = sha256(data)
        expected = REQUEST_SHA256 if what == "request" else REPLY_SHA256
        note = "= docs/LEGACY.md"
        if digest != expected:
            key = "Prints the password in `Client msg`"
            if what == "request" and where.startswith("printed") and data == masked_request:
                note = f"password masked (README: {rows[key][0]})"
            else:
                note = "DIFFERS from docs/LEGACY.md"
                unexplained.append(f"{what} {where}: sha256 {digest}")
        printed.append(f"  {what:7} {len(data):4} B  {digest}  {where}  {note}")
    return printed, unexplained


def indent(text):
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rust-bin", required=True, help="directory holding server and client")
    parser.add_argument("--c-server", required=True, help="the project's C server")
    parser.add_argument("--c-client", required=True, help="the project's C client")
    parser.add_argument("--work", default=str(ROOT / "build" / "compare" / "run"))
    args = parser.parse_args()

    rows = readme_rows()
    for key, _, _ in EXPLAINED:
        if key not in rows:
            raise RuntimeError(f"the README table has no row {key!r}; the script's list of "
                               "explained differences must mirror it")

    orig_server, orig_client = os.environ.get("ORIG_SERVER"), os.environ.get("ORIG_CLIENT")
    c_server = Program("C", "server", orig_server or args.c_server, own=not orig_server)
    c_client = Program("C", "client", orig_client or args.c_client, own=not orig_client)
    rust_bin = Path(args.rust_bin).resolve()
    rust_server = Program("Rust", "server", rust_bin / "server", own=True)
    rust_client = Program("Rust", "client", rust_bin / "client", own=True)
    for program in (c_server, c_client, rust_server, rust_client):
        if not os.access(program.path, os.X_OK):
            raise RuntimeError(f"{program.label}: {program.path} is not an executable file")

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cert = subprocess.run([str(ROOT / "scripts" / "gencert.sh"), str(work / "mycert.pem")],
                          capture_output=True, text=True)
    if cert.returncode != 0:
        raise RuntimeError(f"scripts/gencert.sh failed: {cert.stderr}")

    pairings = [(c_client, c_server), (c_client, rust_server),
                (rust_client, c_server), (rust_client, rust_server)]
    print("make compare: the four pairings, user aticle / password 123 (the Rust server runs "
          "with --demo)")
    print("C programs: " + ("the project's compare/server.c" if c_server.own else
                            f"ORIG_SERVER={c_server.path}") + ", "
          + ("compare/client.c" if c_client.own else f"ORIG_CLIENT={c_client.path}"))
    summary, failed, reference = [], False, None
    width = max(len(f"1/4  {c.label}  ->  {s.label}") for c, s in pairings)
    for n, (client, server) in enumerate(pairings, 1):
        title = f"{n}/4  {client.label}  ->  {server.label}"
        print(f"\n=== {title}{'  (the reference)' if n == 1 else ''} ===")
        result = run_pairing(client, server, work / str(n))
        if reference is None:
            reference = result
        print(f"--- client stdout (exit status {result['status']}) ---")
        print(indent(result["client"]))
        if result["client_err"].strip():
            print("--- client stderr ---\n" + indent(result["client_err"]))
        print("--- server stdout ---")
        print(indent(result["server"]))
        if result["server_err"].strip():
            print("--- server stderr ---\n" + indent(result["server_err"]))
        print("--- SHA-256 of the request and the reply ---")
        lines, bad = check_hashes(result, rows)
        print("\n".join(lines))
        found = (differences("client", reference["client"], result["client"], rows)
                 + differences("server", reference["server"], result["server"], rows))
        if result["status"] != 0:
            found.append((f"client: exit status {result['status']}", None))
        found += [(line, None) for line in bad]
        print("--- differences from the reference (client's port numbers aside) ---")
        if not found:
            print("    none")
        for line, row in found:
            if row:
                print(f"    explained: {line}\n      README: {row[0]} | {row[1]} | {row[2]}")
            else:
                print(f"    NOT EXPLAINED: {line}")
        unexplained = sum(1 for _, row in found if row is None)
        explained = len(found) - unexplained
        failed |= unexplained > 0
        summary.append(f"  {title:{width}}   {explained} explained, {unexplained} not explained")

    print("\n=== summary ===")
    print("\n".join(summary))
    print("make compare: " + ("FAILED: differences the README does not explain" if failed
                              else "OK: every difference is explained by the README's table"))
    return 1 if failed else 0


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 2
    try:
        code = main()
    except (RuntimeError, OSError) as e:
        print(f"compare: {e}", file=sys.stderr)
    finally:
        for proc in list(RUNNING):
            stop(proc)
    sys.exit(code)
