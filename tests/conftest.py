"""Shared fixtures for the integration tests: they start the real `runnel` binary on a free
port with a temporary data directory and drive it with clients nobody here wrote."""

import os
import re
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNEL = os.environ.get("RUNNEL_BIN", os.path.join(ROOT, "target", "debug", "runnel"))
READY = re.compile(r"runnel ready: listening on (\S+):(\d+)")


class Broker:
    """One `runnel serve` process. `restart()` keeps the data dir; `kill()` is kill -9."""

    def __init__(self, data_dir, shards=2, extra_args=()):
        self.data_dir = str(data_dir)
        self.shards = shards
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc = None
        self.log_path = os.path.join(self.data_dir + "-logs", "broker.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30):
        listen = f"127.0.0.1:{self.port}"
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [RUNNEL, "serve", "--listen", listen, "--data-dir", self.data_dir,
             "--shards", str(self.shards), *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"runnel exited before it was ready; see {self.log_path}")
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                return self
        raise RuntimeError("runnel did not become ready in time")

    def stop(self):
        """Clean shutdown (SIGTERM); returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def restart(self, clean=True):
        self.stop() if clean else self.kill()
        return self.start()

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()


@pytest.fixture
def broker(tmp_path):
    instance = Broker(tmp_path / "data").start()
    yield instance
    instance.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """Start brokers with custom arguments: broker_factory(shards=1, extra_args=[...])."""
    started = []

    def make(**kwargs):
        index = len(started)
        instance = Broker(tmp_path / f"data{index}", **kwargs).start()
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.stop()
