"""Long-running Java programs from the Kafka jars (scripts/kafka-jars.sh fetches them into
.tools/kafka-jars): started with `java -cp`, their output kept in a log file, waited on with a
bound, and stopped with SIGTERM as a person would stop them."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT

JARS = os.path.join(ROOT, ".tools", "kafka-jars")
LOG_TAIL_CHARS = 6000


def require_kafka_jars():
    if shutil.which("java") is None or not os.path.isdir(JARS):
        pytest.fail("the Kafka jars are missing: run scripts/kafka-jars.sh (needs maven)")


class JavaProgram:
    """One `java -cp .tools/kafka-jars/* <main class> <args>` process; stdout and stderr go
    to `log_path` (SLF4J simple logger at info, with milliseconds since start)."""

    def __init__(self, main_class, args, log_path):
        self.log_path = log_path
        command = ["java", "-XX:TieredStopAtLevel=1",
                   "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                   "-Dorg.slf4j.simpleLogger.showDateTime=true",
                   "-cp", os.path.join(JARS, "*"), main_class, *map(str, args)]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text()

    def wait_for(self, condition, what, timeout=60):
        """Polls `condition` until it holds; fails with the log's tail after `timeout` seconds
        or as soon as the program exits."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"{what} (java exit {self.process.poll()}); its log ends:\n"
                             f"{self.log()[-LOG_TAIL_CHARS:]}")

    def stop(self):
        """SIGTERM: the program's shutdown hook closes its clients. SIGKILL after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def assert_stopped_cleanly(self, last_words):
        """Exited on the SIGTERM (143) or by itself (0), said `last_words` and logged no ERROR."""
        log = self.log()
        assert self.process.returncode in (0, 143), (
            f"exit {self.process.returncode}\n{log[-LOG_TAIL_CHARS:]}")
        assert last_words in log, log[-LOG_TAIL_CHARS:]
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert not errors, errors[:5]
