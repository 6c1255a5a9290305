#!/usr/bin/env bash
# Fetches the Apache Kafka 4.x command-line tools (kafka-topics, the console producer and
# consumer, the producer perf test), Kafka Streams with its WordCountDemo example, Kafka Connect
# with the FileStream connectors, and their dependencies from Maven Central into
# .tools/kafka-jars, for tests/test_java_tools.py, test_streams.py and test_connect.py
# (`java -cp '.tools/kafka-jars/*' <class>`).
# Idempotent: does nothing when the jars for the pinned pom are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pom=tests/java/pom.xml
dest=.tools/kafka-jars
stamp="$dest/.pom"

if [ -f "$stamp" ] && cmp -s "$pom" "$stamp"; then
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  echo "== installing maven and a JDK (apt)"
  if ! apt-get install -y maven >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y maven >/dev/null
  fi
fi

echo "== fetching the Kafka tool jars (maven) into $dest"
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
log=$(mktemp)
if ! mvn -q -B -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$PWD/$dest.tmp" >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
cp "$pom" "$dest.tmp/.pom"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
