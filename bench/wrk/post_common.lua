-- What the write scripts (post_pair.lua, post_many.lua) share, put before each of them
-- (bench/run.py, Case.prelude): each thread's index, and the messages' texts.

-- Each thread's index is a global that setup() sets in that thread's state (thread:set);
-- a chunk-level `local thread_index` would shadow it there (every thread 0, ids colliding).
local threads_made = 0

function setup(thread)
  thread:set("thread_index", threads_made)
  threads_made = threads_made + 1
end

local user_text = string.rep("How do I keep a poll fast when the table grows? ", 2)
local assistant_text = string.rep("Use an index on (session, id) and fetch only rows past the cursor. ", 6)
