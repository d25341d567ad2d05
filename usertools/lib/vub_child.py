# SPDX-License-Identifier: Apache-2.0
"""What usertools' Python scripts (vub-perf, vub-soak) share: child processes driven at
their prompts, and where sockets and EAL runtime directories live."""

import os
import re
import shlex
import signal
import subprocess
import threading
import time

COMMON_SH = os.path.join(os.path.dirname(os.path.realpath(__file__)), "common.sh")
TESTPMD_PROMPT = b"testpmd> "
COMMAND_TIMEOUT_S = 20
QUIT_TIMEOUT_S = 15


# Children: each in its own session (process group), its output read by a thread into a
# buffer and a log file; all of them killed on the way out, whatever the way.


class Child:
    live = set()

    def __init__(self, name, argv, log_path, stdin=True, prompt=TESTPMD_PROMPT):
        self.name = name
        self.prompt = prompt
        self.argv = argv
        self.log = open(log_path, "wb")
        self.log.write(("+ " + shlex.join(argv) + "\n").encode())
        self.log.flush()
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.eof = False
        # stdbuf: testpmd's stdout is a pipe, line-buffer it so prompts and replies arrive.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "-eL"] + argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        Child.live.add(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                try:
                    self.log.write(data)
                    self.log.flush()
                except ValueError:  # closed by reap() after a kill
                    pass
            with self.cond:
                if not data:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.buf += data
                self.cond.notify_all()

    def alive(self):
        return self.proc.poll() is None

    def mark(self):
        with self.cond:
            return len(self.buf)

    def text(self, start=0):
        with self.cond:
            return bytes(self.buf[start:]).decode(errors="replace")

    def expect(self, pattern, start, timeout_s):
        """Wait for regex pattern (bytes) in the output from offset start; the match or None."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                m = regex.search(self.buf, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))

    def send(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def command(self, line, timeout_s=COMMAND_TIMEOUT_S):
        """Type line at the prompt; its reply, or None when no prompt follows."""
        start = self.mark()
        if not self.send(line):
            return None
        m = self.expect(re.escape(self.prompt), start, timeout_s)
        if not m:
            return None
        with self.cond:
            return bytes(self.buf[start : m.start()]).decode(errors="replace")

    def kill(self, sig):
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout_s):
        try:
            self.proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, quit_line=None, timeout_s=QUIT_TIMEOUT_S):
        """quit_line typed (testpmd) or SIGTERM (vub-switch); SIGKILL after timeout_s."""
        clean = True
        if self.alive():
            if quit_line is not None and self.send(quit_line):
                clean = self.wait(timeout_s)
            else:
                self.kill(signal.SIGTERM)
                clean = self.wait(timeout_s)
            if not clean:
                self.kill(signal.SIGTERM)
                if not self.wait(3):
                    self.kill(signal.SIGKILL)
                    self.wait(5)
        self.reap()
        return clean

    def reap(self):
        self.reader.join(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        try:
            self.log.close()
        except OSError:
            pass
        Child.live.discard(self)

    @classmethod
    def kill_all(cls):
        for c in list(cls.live):
            c.kill(signal.SIGTERM)
        for c in list(cls.live):
            if not c.wait(5):
                c.kill(signal.SIGKILL)
                c.wait(5)
            c.reap()



def runtime_dir():
    if os.geteuid() == 0:
        d = "/run/vub"
    elif os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        d = os.path.join(os.environ["XDG_RUNTIME_DIR"], "vub")
    else:
        d = "/tmp/vub"
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def dpdk_runtime_dir(prefix):
    """EAL's runtime directory of a file prefix."""
    if os.geteuid() == 0:
        return os.path.join("/var/run/dpdk", prefix)
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", "dpdk", prefix)


def socket_listening(path):
    """True when a listening unix socket is bound to path (/proc/net/unix)."""
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[3] == "00010000" and fields[-1] == path:
                    return True
    except OSError:
        pass
    return False


def bash_common(snippet):
    """Run snippet in bash after sourcing usertools/lib/common.sh; its exit status. Its
    output (apt's, meson's) goes to stderr: stdout is the calling script's."""
    script = f'source "{COMMON_SH}" && {{ {snippet}; }} >&2'
    return subprocess.run(["bash", "-c", script]).returncode
