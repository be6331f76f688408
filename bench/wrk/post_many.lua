-- POST /api/chat/messages: one array of `per_request` messages (100, the most a request
-- may carry), as a client uploads a conversation: new client ids each time, turns of a
-- user message and the assistant's answer, rotating over `sessions` sessions.
-- Arguments (after --): a nonce unique to this wrk run, the number of sessions, the
-- sessions' name prefix, the messages per request.

-- After post_common.lua (setup, thread_index, the texts).

local nonce, sessions, prefix, per_request, counter

function init(args)
  nonce = args[1] or tostring(os.time())
  sessions = tonumber(args[2] or "1000")
  prefix = args[3] or "bench-bulk-"
  per_request = tonumber(args[4] or "100")
  counter = 0
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local session = (counter * 7 + thread_index * 499) % sessions
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local parts = {}
  for i = 1, per_request do
    local id = string.format("%s-%d-%d-%d", nonce, thread_index, counter, i)
    if i % 2 == 1 then
      parts[i] = string.format('{"id":"%s","role":"user","content":"%s","timestamp":"%s"}', id, user_text, stamp)
    else
      parts[i] = string.format(
        '{"id":"%s","role":"assistant","content":"%s","contentType":"markdown","model":"gpt-4o-mini",' ..
        '"total_tokens":412,"input_tokens":96,"output_tokens":316,"elapsed_time":1830,"timestamp":"%s"}',
        id, assistant_text, stamp)
    end
  end
  local body = string.format('{"sessionId":"%s%04d","messages":[%s]}', prefix, session, table.concat(parts, ","))
  return wrk.format("POST", nil, nil, body)
end
