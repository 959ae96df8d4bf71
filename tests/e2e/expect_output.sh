#!/bin/sh
# expect_output.sh PATTERN COMMAND [ARGS...]: runs COMMAND, and passes only when it exits 0
# and a line of its output (stdout and stderr) matches the extended regular expression
# PATTERN. Its output is shown either way.
pattern=$1
shift
output=$("$@" 2>&1)
status=$?
printf '%s\n' "$output"
[ "$status" -eq 0 ] || { echo "expect_output: '$*' exited $status" >&2; exit 1; }
printf '%s\n' "$output" | grep -Eq -- "$pattern" || { echo "expect_output: no line matches '$pattern'" >&2; exit 1; }
