#!/bin/sh
# An example agent: behaves like a coding agent would, in miniature.
# - reads its prompt from stdin (prompt = "stdin" in the worker config)
# - prints progress lines for a few seconds (streamed live to the coordinator)
# - writes its result as a JSON object to $HIVE_RESULT_FILE
# - exits 0 on success; exit 75 would mean "try again later" (transient)
set -eu

prompt=$(cat)
steps=${HELLO_AGENT_STEPS:-3}
echo "task $HIVE_TASK_ID (attempt $HIVE_ATTEMPT_ID): $prompt"
i=1
while [ "$i" -le "$steps" ]; do
    echo "step $i/$steps: thinking about \"$prompt\""
    sleep 1
    i=$((i + 1))
done
if [ -n "${HIVE_INPUT_FILE:-}" ]; then
    echo "input: $(cat "$HIVE_INPUT_FILE")"
fi
words=$(printf '%s' "$prompt" | wc -w | tr -d ' ')
# Escape the prompt for JSON (backslashes and quotes).
escaped=$(printf '%s' "$prompt" | sed 's/\\/\\\\/g; s/"/\\"/g')
printf '{"answer": "hello from %s", "prompt": "%s", "words": %s}\n' "$(hostname)" "$escaped" "$words" > "$HIVE_RESULT_FILE"
echo "done"
