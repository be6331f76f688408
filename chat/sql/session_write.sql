-- The write path on PostgreSQL: one statement per request (chat.services.write_sql).
--
-- Loaded by a migration (0009, and any later one that changes this file: CREATE OR
-- REPLACE, so a migration that re-runs the file brings a database to this text).
--
-- `chat_session_write(...)` does, in one call, everything a write does while it holds
-- its session's row lock: take the lock (making the session first if the API names an
-- unknown one), check who may write, upsert the messages, move the session's
-- statistics and the user's usage ledger. The caller builds and validates every row
-- before it calls (the lock is taken inside), so the lock is held for the SQL alone,
-- with no round trip to the application while it is held; called outside a
-- transaction (as a request does) the statement commits on its own and the lock is
-- released with that commit.
--
-- Why a function and not one data-modifying CTE: a statement's snapshot is taken
-- when it starts, before it waits for the lock. After the wait it would see the
-- locked session row as the writer before it left it (PostgreSQL re-reads a row it
-- locks) but not that writer's messages: a message upserted twice in a row would be
-- counted as new twice. In PL/pgSQL each statement takes a fresh snapshot, so the
-- CTE that writes (statement 2) sees everything committed before the lock was granted.
--
-- The rules are those of the ORM path in chat/services/messages.py, which SQLite
-- runs; tests/test_session_write_paths.py runs the same scenarios through both on
-- PostgreSQL and compares the messages, the statistics and the ledger.
--
-- `chat_shorten` is Python's `shorten` (chat.services.messages) in SQL, for the one
-- case where the newest message after a write is not one of the request's (an upsert
-- moved the newest back in time): every other preview is made in Python before the
-- lock. Python's whitespace (str.split) is the bracket below, spelled out.

CREATE OR REPLACE FUNCTION chat_shorten(p_text text, p_limit integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
  SELECT CASE WHEN length(c) <= p_limit THEN c ELSE rtrim(left(c, p_limit - 3), ' ') || '...' END
  FROM (SELECT btrim(regexp_replace(p_text, '[\u0009\u000a\u000b\u000c\u000d\u001c\u001d\u001e\u001f\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'), ' ') AS c) collapsed
$$;

CREATE OR REPLACE FUNCTION chat_session_write(
  p_session_id text,      -- the API: the session by id, made for p_user_id if unknown (else NULL)
  p_session_key uuid,     -- a guest send or staff reply: the guest session by its key (else NULL)
  p_user_id bigint,       -- the API: the caller, who must own the session
  p_new_title text,       -- the API: the title of a session this write makes
  p_title text,           -- the API: a title to set (a non-blank sessionTitle), else NULL
  p_first_title text,     -- a guest send: the title of a session still empty and untitled, else NULL
  p_default_title text,   -- "New Chat"
  p_retry_id text,        -- a client id: a retry if its author stored it already
  p_author_id bigint,     -- a staff reply: its author, else NULL
  p_messages json,        -- the rows, keyed by column (chat_messages), in request order
  p_extras text[],        -- each row's extra keys as JSON text (or NULL), in the same order
  p_previews text[]       -- each row's content shortened to a preview, in the same order
) RETURNS TABLE (
  outcome text,           -- ok | not_found | forbidden | conflict | retry
  session_id text,
  owner_id bigint,
  guest_key uuid,
  ids bigint[],           -- the messages' integer ids, in request order
  stamps timestamptz[],   -- their timestamps as stored (a missing one: kept, or the receipt time)
  written_at timestamptz, -- the time taken under the lock: updated_at, created_at, receipt time
  waited interval,        -- from the statement's start until the lock was granted
  retried_content text,   -- a retry: the message as first stored
  retried_content_type text
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  s chat_sessions%ROWTYPE;
  v_created boolean := false;
  v_title text;
  v_retried chat_messages%ROWTYPE;
BEGIN
  -- 1. The session's row lock. Every writer of a session takes it first, so the
  --    writes of one session run one after the other: exact statistics, and
  --    message ids that commit in the order they were drawn (a guest poller that
  --    reads past id N never misses a smaller one committed later).
  IF p_session_key IS NOT NULL THEN
    -- Rechecked on the row it locks: a session purged or given an owner meanwhile is not found.
    SELECT * INTO s FROM chat_sessions c
     WHERE c.session_key = p_session_key AND c.user_id IS NULL FOR UPDATE;
    IF NOT FOUND THEN
      outcome := 'not_found';
      RETURN NEXT;
      RETURN;
    END IF;
  ELSE
    -- Two requests making one new session: the insert that loses does nothing
    -- (it waits for the winner's commit), and the loser then locks the winner's row.
    -- A session deleted between the two steps is simply made again.
    LOOP
      SELECT * INTO s FROM chat_sessions c WHERE c.id = p_session_id FOR UPDATE;
      EXIT WHEN FOUND;
      INSERT INTO chat_sessions AS c (id, user_id, session_key, guest_name, title, message_count,
                                      total_tokens, created_at, updated_at)
      VALUES (p_session_id, p_user_id, gen_random_uuid(), '', p_new_title, 0, 0,
              clock_timestamp(), clock_timestamp())
      ON CONFLICT ON CONSTRAINT chat_sessions_pkey DO NOTHING
      RETURNING * INTO s;
      IF FOUND THEN
        v_created := true;
        EXIT;
      END IF;
    END LOOP;
    IF s.user_id IS DISTINCT FROM p_user_id THEN
      outcome := 'forbidden';  -- another user's session, or a guest's: nothing written
      RETURN NEXT;
      RETURN;
    END IF;
  END IF;
  -- The time of the write, read under the lock: read before the wait, a writer
  -- that waited would set an updated_at older than the one it waited for.
  written_at := clock_timestamp();
  waited := written_at - statement_timestamp();
  session_id := s.id;
  owner_id := s.user_id;
  guest_key := s.session_key;

  -- 2. A retry (a guest send's or a staff reply's client id): the author's own earlier
  --    send is the answer, and nothing is written; another author's message is a conflict.
  IF p_retry_id IS NOT NULL THEN
    SELECT * INTO v_retried FROM chat_messages m WHERE m.session_id = s.id AND m.message_id = p_retry_id;
    IF FOUND THEN
      IF v_retried.role = (p_messages -> 0 ->> 'role') AND v_retried.author_id IS NOT DISTINCT FROM p_author_id THEN
        outcome := 'retry';
        ids := ARRAY[v_retried.id];
        stamps := ARRAY[v_retried.message_timestamp];
        retried_content := v_retried.content;
        retried_content_type := v_retried.content_type;
      ELSE
        outcome := 'conflict';
      END IF;
      RETURN NEXT;
      RETURN;
    END IF;
  END IF;

  v_title := CASE
    WHEN p_title IS NOT NULL AND p_title <> s.title THEN p_title
    WHEN p_first_title IS NOT NULL AND s.message_count = 0 AND s.title = p_default_title THEN p_first_title
  END;

  -- 3. One statement, with a snapshot taken now that the lock is held: the messages,
  --    the session's statistics and the usage ledger.
  WITH incoming AS (
    -- The request's rows, typed by chat_messages' own columns.
    SELECT i.*, i.ordinality::integer AS n
    FROM json_populate_recordset(NULL::chat_messages, p_messages) WITH ORDINALITY AS i
  ),
  old AS (
    -- The stored messages this write replaces, as they were. Asked whatever
    -- message_count says; skipped for a session made by this write (it has none).
    -- One probe of the (session, message_id) index per message of the request
    -- (LATERAL ... LIMIT 1 keeps the planner from scanning the session instead).
    SELECT o.*
    FROM incoming i CROSS JOIN LATERAL (
      SELECT m.id, m.message_id, m.message_timestamp, m.model, m.input_tokens, m.output_tokens,
             m.total_tokens, m.error
      FROM chat_messages m
      WHERE m.session_id = s.id AND m.message_id = i.message_id
      LIMIT 1
    ) o
    WHERE NOT v_created
  ),
  saved AS (
    -- Upsert by id: a replaced message takes every column of the request (last write
    -- wins) but keeps its integer id and created_at; a missing timestamp keeps the
    -- stored one, or is the receipt time. Ids are drawn in request order.
    INSERT INTO chat_messages AS m (
      session_id, message_id, role, content, content_type, model, original_model, total_tokens,
      input_tokens, output_tokens, user_message_id, elapsed_time, completion_id, message_timestamp,
      error, error_message, error_code, retry_after, suggestions, extra, author_id, created_at)
    SELECT s.id, i.message_id, i.role, i.content, i.content_type, i.model, i.original_model, i.total_tokens,
           i.input_tokens, i.output_tokens, i.user_message_id, i.elapsed_time, i.completion_id,
           COALESCE(i.message_timestamp, o.message_timestamp, written_at),
           i.error, i.error_message, i.error_code, i.retry_after, i.suggestions, p_extras[i.n]::json,
           p_author_id,
           written_at
    FROM incoming i LEFT JOIN old o ON o.message_id = i.message_id
    ORDER BY i.n
    ON CONFLICT ON CONSTRAINT chat_message_unique_client_id DO UPDATE SET
      role = excluded.role, content = excluded.content, content_type = excluded.content_type,
      model = excluded.model, original_model = excluded.original_model,
      total_tokens = excluded.total_tokens, input_tokens = excluded.input_tokens,
      output_tokens = excluded.output_tokens, user_message_id = excluded.user_message_id,
      elapsed_time = excluded.elapsed_time, completion_id = excluded.completion_id,
      message_timestamp = excluded.message_timestamp, error = excluded.error,
      error_message = excluded.error_message, error_code = excluded.error_code,
      retry_after = excluded.retry_after, suggestions = excluded.suggestions, extra = excluded.extra,
      author_id = excluded.author_id
    RETURNING m.id, m.message_id, m.message_timestamp, m.model, m.role, m.input_tokens, m.output_tokens,
              m.total_tokens, m.error
  ),
  newest AS (
    -- The session's newest message by (timestamp, id) after this write. Only inserts:
    -- the newest of the request's (its ids are larger than every stored one). Some
    -- replaced: a replaced message may have been the newest and moved back in time,
    -- so the newest stored message that was not replaced competes too (one row of
    -- the (session, timestamp, id) index, read backwards).
    SELECT c.id, c.message_timestamp, c.model, c.role, COALESCE(c.preview, chat_shorten(c.content, 100)) AS preview
    FROM (
      SELECT sv.id, sv.message_timestamp, sv.model, sv.role, p_previews[i.n] AS preview, NULL::text AS content
      FROM saved sv JOIN incoming i ON i.message_id = sv.message_id
      UNION ALL
      (SELECT m.id, m.message_timestamp, m.model, m.role, NULL, m.content
       FROM chat_messages m
       WHERE EXISTS (SELECT FROM old) AND m.session_id = s.id
         AND m.message_id NOT IN (SELECT message_id FROM old)
       ORDER BY m.message_timestamp DESC, m.id DESC
       LIMIT 1)
    ) c
    ORDER BY c.message_timestamp DESC, c.id DESC
    LIMIT 1
  ),
  moved AS (
    -- The statistics, by deltas: a cost that does not grow with the session.
    UPDATE chat_sessions c SET
      message_count = c.message_count + (SELECT count(*) FROM saved) - (SELECT count(*) FROM old),
      total_tokens = c.total_tokens + (SELECT COALESCE(sum(total_tokens), 0) FROM saved)
                                    - (SELECT COALESCE(sum(total_tokens), 0) FROM old),
      updated_at = written_at,
      title = COALESCE(v_title, c.title),
      -- The "last" fields follow the newest message, unless the request only added
      -- messages older than the session's newest (then they stay).
      (last_model, last_message_preview, last_message_timestamp, last_message_id, last_role) = (
        SELECT l.model, l.preview, l.message_timestamp, l.id, l.role FROM (
          SELECT 0 AS rank, n.model, n.preview, n.message_timestamp, n.id, n.role FROM newest n
          WHERE EXISTS (SELECT FROM old) OR c.last_message_timestamp IS NULL
             OR n.message_timestamp >= c.last_message_timestamp
          UNION ALL
          SELECT 1, c.last_model, c.last_message_preview, c.last_message_timestamp, c.last_message_id,
                 c.last_role
        ) l ORDER BY l.rank LIMIT 1)
    WHERE c.id = s.id
  ),
  ledger AS (
    -- The usage ledger (chat.services.usage): what the saved messages use now, less what
    -- the replaced ones used, per UTC day and model. Rows in key order (code point order,
    -- as Python sorts), the lock order of every writer of the user: no deadlock.
    INSERT INTO chat_usage_days AS u (user_id, day, model, live, messages, input_tokens, output_tokens,
                                      total_tokens, errors)
    SELECT s.user_id, d.day, d.model, true, sum(d.sign), sum(d.sign * COALESCE(d.input_tokens, 0)),
           sum(d.sign * COALESCE(d.output_tokens, 0)), sum(d.sign * COALESCE(d.total_tokens, 0)),
           sum(d.sign * d.error::integer)
    FROM (
      SELECT 1 AS sign, (sv.message_timestamp AT TIME ZONE 'UTC')::date AS day,
             COALESCE(sv.model, '') AS model, sv.input_tokens, sv.output_tokens, sv.total_tokens, sv.error
      FROM saved sv
      UNION ALL
      SELECT -1, (o.message_timestamp AT TIME ZONE 'UTC')::date, COALESCE(o.model, ''), o.input_tokens,
             o.output_tokens, o.total_tokens, o.error
      FROM old o
    ) d
    WHERE s.user_id IS NOT NULL  -- guest sessions have no ledger
    GROUP BY d.day, d.model
    HAVING sum(d.sign) <> 0 OR sum(d.sign * COALESCE(d.input_tokens, 0)) <> 0
        OR sum(d.sign * COALESCE(d.output_tokens, 0)) <> 0 OR sum(d.sign * COALESCE(d.total_tokens, 0)) <> 0
        OR sum(d.sign * d.error::integer) <> 0
    ORDER BY d.day, d.model COLLATE "C"
    ON CONFLICT ON CONSTRAINT chat_usage_day_key DO UPDATE SET
      messages = u.messages + excluded.messages, input_tokens = u.input_tokens + excluded.input_tokens,
      output_tokens = u.output_tokens + excluded.output_tokens,
      total_tokens = u.total_tokens + excluded.total_tokens, errors = u.errors + excluded.errors
  )
  -- moved and ledger run to completion although nothing reads them (PostgreSQL
  -- runs every data-modifying WITH exactly once).
  SELECT array_agg(sv.id ORDER BY i.n), array_agg(sv.message_timestamp ORDER BY i.n)
  INTO ids, stamps
  FROM saved sv JOIN incoming i ON i.message_id = sv.message_id;

  outcome := 'ok';
  RETURN NEXT;
END
$$;
