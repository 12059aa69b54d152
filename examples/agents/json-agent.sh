#!/bin/sh
# An example of any CLI agent that prints its result as the last line of its
# stdout (the worker config needs no result file):
# - reads its prompt from stdin (prompt = "stdin")
# - prints "session: ID" (found by session_regex) and resumes the session in
#   $HIVE_RESUME_SESSION when the task resumes sessions and this is a retry
# - ends with one JSON line: its answer, session and usage (cost is summed
#   per task and per swarm, and checked against the swarm's budget)
# - exits 75 ("try again later") when told it is rate limited
set -eu

prompt=$(cat)
session=${HIVE_RESUME_SESSION:-$HIVE_ATTEMPT_ID}
echo "session: $session"
case "$prompt" in
    *"rate limited"*) echo "the provider said 429; try again later" >&2; exit 75 ;;
esac
echo "working on: $prompt"
words=$(printf '%s' "$prompt" | wc -w | tr -d ' ')
printf '{"answer": "%s words", "session_id": "%s", "usage": {"input_tokens": %s, "output_tokens": 3, "cost": 0.001}}\n' \
    "$words" "$session" "$words"
