"""Full-text search over users' messages: an index the database keeps in step by itself.

PostgreSQL: `chat_message_search` holds each message of a user's session as a
`tsvector` of its unaccented content ('simple' configuration: no stemming, no stop
words, so every language is treated alike) plus one lexeme naming its owner
(`~u<id>`: `~` never comes out of the parser, so no word can forge it), under
one GIN index. A search asks for the owner's lexeme AND the words, so the index
intersects the owner's entries with the words' and reads only the caller's
matches, whatever the size of the table. (A GIN on (user_id, document) with
btree_gin was tried first: with the user id as a literal the planner dropped
it from the index condition and filtered 54,000 rows at 1M messages.) Statement-level triggers with
transition tables keep it in step with chat_messages for every writer (services,
admin, COPY); a TRUNCATE of chat_messages empties it too.

SQLite: an external-content FTS5 table over chat_messages (unicode61 tokenizer,
diacritics removed) kept by row triggers, as SQLite's documentation shows. A
later migration that rebuilds chat_messages on SQLite drops these triggers and
must create them again (tests/test_search_api.py would fail).
"""

from django.db import migrations

# At most this many characters of a message are indexed: a tsvector holds at most
# 1 MB, and no message may fail to save because of its index.
INDEXED_CHARACTERS = 100_000

POSTGRESQL = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    # unaccent() is STABLE (it reads its dictionary through search_path); naming the
    # dictionary makes it safe to declare IMMUTABLE, as an index expression needs.
    """CREATE OR REPLACE FUNCTION chat_unaccent(text) RETURNS text
       LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
       AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$""",
    f"""CREATE OR REPLACE FUNCTION chat_search_document(text) RETURNS tsvector
       LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
       AS $$ SELECT to_tsvector('simple'::regconfig, public.chat_unaccent(left($1, {INDEXED_CHARACTERS}))) $$""",
    """CREATE TABLE chat_message_search (
         message_id bigint PRIMARY KEY,
         user_id bigint NOT NULL,
         "timestamp" timestamp with time zone NOT NULL,
         document tsvector NOT NULL
       )""",
    "CREATE INDEX chat_message_search_document ON chat_message_search USING gin (document)",
    """CREATE FUNCTION chat_message_search_upsert() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO chat_message_search (message_id, user_id, "timestamp", document)
         SELECT n.id, s.user_id, n.message_timestamp,
                chat_search_document(n.content) || array_to_tsvector(ARRAY['~u' || s.user_id])
         FROM new_rows n JOIN chat_sessions s ON s.id = n.session_id
         WHERE s.user_id IS NOT NULL
         ON CONFLICT (message_id) DO UPDATE
           SET "timestamp" = excluded."timestamp", document = excluded.document;
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION chat_message_search_delete() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         DELETE FROM chat_message_search WHERE message_id IN (SELECT id FROM old_rows);
         RETURN NULL;
       END $$""",
    """CREATE FUNCTION chat_message_search_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         TRUNCATE chat_message_search;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER chat_message_search_insert AFTER INSERT ON chat_messages
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chat_message_search_upsert()""",
    """CREATE TRIGGER chat_message_search_update AFTER UPDATE ON chat_messages
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chat_message_search_upsert()""",
    """CREATE TRIGGER chat_message_search_delete AFTER DELETE ON chat_messages
       REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION chat_message_search_delete()""",
    """CREATE TRIGGER chat_message_search_truncate AFTER TRUNCATE ON chat_messages
       FOR EACH STATEMENT EXECUTE FUNCTION chat_message_search_truncate()""",
    """INSERT INTO chat_message_search (message_id, user_id, "timestamp", document)
       SELECT m.id, s.user_id, m.message_timestamp,
              chat_search_document(m.content) || array_to_tsvector(ARRAY['~u' || s.user_id])
       FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id WHERE s.user_id IS NOT NULL""",
]

POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS chat_message_search_insert ON chat_messages",
    "DROP TRIGGER IF EXISTS chat_message_search_update ON chat_messages",
    "DROP TRIGGER IF EXISTS chat_message_search_delete ON chat_messages",
    "DROP TRIGGER IF EXISTS chat_message_search_truncate ON chat_messages",
    "DROP FUNCTION IF EXISTS chat_message_search_upsert()",
    "DROP FUNCTION IF EXISTS chat_message_search_delete()",
    "DROP FUNCTION IF EXISTS chat_message_search_truncate()",
    "DROP TABLE IF EXISTS chat_message_search",
    "DROP FUNCTION IF EXISTS chat_search_document(text)",
    "DROP FUNCTION IF EXISTS chat_unaccent(text)",
]

SQLITE = [
    """CREATE VIRTUAL TABLE chat_message_fts USING fts5(
         content, content='chat_messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
       )""",
    """CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_messages BEGIN
         INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content);
       END""",
    """CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_messages BEGIN
         INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content);
       END""",
    """CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF content ON chat_messages BEGIN
         INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content);
         INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content);
       END""",
    "INSERT INTO chat_message_fts (chat_message_fts) VALUES ('rebuild')",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TABLE IF EXISTS chat_message_fts",
]


def run(statements: dict):
    def operation(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement, params=None)

    return operation


class Migration(migrations.Migration):
    dependencies = [("chat", "0004_usage_ledger")]

    operations = [
        migrations.RunPython(
            run({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
