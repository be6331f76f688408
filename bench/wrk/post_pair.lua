-- POST /api/chat/messages: a user message and the assistant's answer, as a chat client
-- saves a turn. Each request goes to the next of `sessions` sessions and carries new
-- client ids, so every request appends (the upsert path that replaces is not this case).
-- Arguments (after --): a nonce unique to this wrk run, the number of sessions, the
-- sessions' name prefix (post-pair: 1,000 sessions; post-pair-one-session: one).

-- After post_common.lua (setup, thread_index, the texts).

local nonce, sessions, prefix, counter

function init(args)
  nonce = args[1] or tostring(os.time())
  sessions = tonumber(args[2] or "1000")
  prefix = args[3] or "bench-post-"
  counter = 0
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local session = (counter * 7 + thread_index * 499) % sessions
  local id = string.format("%s-%d-%d", nonce, thread_index, counter)
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local body = string.format(
    '{"sessionId":"%s%04d","messages":[' ..
    '{"id":"%s-u","role":"user","content":"%s","timestamp":"%s"},' ..
    '{"id":"%s-a","role":"assistant","content":"%s","contentType":"markdown","model":"gpt-4o-mini",' ..
    '"originalModel":"gpt-4o-mini-2024-07-18","total_tokens":412,"input_tokens":96,"output_tokens":316,' ..
    '"user_message_id":"%s-u","elapsed_time":1830,"completion_id":"chatcmpl-%s","timestamp":"%s"}]}',
    prefix, session, id, user_text, stamp, id, assistant_text, id, id, stamp)
  return wrk.format("POST", nil, nil, body)
end
