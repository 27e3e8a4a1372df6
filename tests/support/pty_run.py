#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal and answers its prompts, like a person at a terminal.

usage: pty_run.py EXPECT SEND [EXPECT SEND ...] -- COMMAND [ARG ...]

Waits until the terminal shows each EXPECT text (after the previous one), then types SEND
followed by Enter. Afterwards reads until the command exits. Everything the terminal showed,
the echo of what was typed included, goes to stdout; the exit status is the command's.
Each wait is limited to 20 seconds (exit status 124 on a timeout). After a prompt for a
secret (the last line of its EXPECT mentions "password" or ends with "again: "), the answer is typed only once the program
has turned the terminal's echo off, however slow the machine.
"""
import os
import pty
import select
import sys
import termios
import time

STEP_LIMIT = 20.0


def read_some(fd, shown):
    ready, _, _ = select.select([fd], [], [], 0.1)
    if not ready:
        return True
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the command has exited and the terminal is closed
        return False
    if not chunk:
        return False
    shown.extend(chunk)
    return True


def main(argv):
    split = argv.index("--")
    steps, command = argv[1:split], argv[split + 1:]
    pairs = list(zip(steps[0::2], steps[1::2]))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    shown = bytearray()
    seen_up_to = 0
    for expect, send in pairs:
        deadline = time.monotonic() + STEP_LIMIT
        while True:
            at = shown.find(expect.encode(), seen_up_to)
            if at >= 0:
                seen_up_to = at + len(expect)
                break
            if time.monotonic() > deadline or not read_some(fd, shown):
                sys.stdout.buffer.write(bytes(shown))
                sys.stderr.write(f"pty_run: never saw {expect!r}\n")
                return 124
        prompt = expect.split("\n")[-1].lower()
        if "password" in prompt or prompt.endswith("again: "):
            # The program prints the prompt, then turns echo off: wait for that.
            while termios.tcgetattr(fd)[3] & termios.ECHO:
                if time.monotonic() > deadline:
                    sys.stdout.buffer.write(bytes(shown))
                    sys.stderr.write(f"pty_run: echo never went off after {expect!r}\n")
                    return 124
                time.sleep(0.005)
        else:
            time.sleep(0.05)  # let the program read the line in the mode it wants
        os.write(fd, send.encode() + b"\r")
    deadline = time.monotonic() + STEP_LIMIT
    while read_some(fd, shown):
        if time.monotonic() > deadline:
            sys.stdout.buffer.write(bytes(shown))
            sys.stderr.write("pty_run: the command did not exit\n")
            os.kill(pid, 9)
            return 124
    _, status = os.waitpid(pid, 0)
    sys.stdout.buffer.write(bytes(shown))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
