"""Search: every lexeme of a document carries its owner, so a search reads only the caller's entries.

Until now a document was its words plus one lexeme naming its owner (`~u<id>`), and a
search asked the GIN index for the owner's lexeme AND the words. The index then
intersected the words' posting lists, which hold every user's messages with those
words: common words grow with the whole table, and at 1,000,000 messages the index
scan of a two-word query took 1.3 ms of the query's 1.9 ms against ~0.2 ms for the
same user at 30,000 (bench/README.md, "Data cases"). Now each lexeme is written
`<owner id>~<word>` (`~` never comes out of the parser, so no word can forge
another user's lexeme), and a query's words are written the same way for the
caller: the posting lists the index reads hold the caller's messages alone,
whatever the size of the table. Positions are kept, so ranks are unchanged.

The documents are rebuilt here, the index dropped first and made again after
(measured: 14 s for 1,000,000 messages, and 1.7 s for the index). It is one
transaction, and the table stays locked until it commits: saving a message (whose
trigger writes here) waits for it, ~16 s a million messages on the benchmark's
machine. Searches wait too. SQLite's FTS5
table is not changed (its search already filters candidates by owner in SQL).
"""

from django.db import migrations

# A message's document from its content and its owner's id: since this migration,
# and as 0005 made it (for the reverse migration).
NEW_DOCUMENT = "chat_owned_document({content}, {owner})"
OLD_DOCUMENT = "chat_search_document({content}) || array_to_tsvector(ARRAY['~u' || {owner}])"

# 0005's trigger function, writing the document {document} of each new row `n`.
TRIGGER_SQL = """CREATE OR REPLACE FUNCTION chat_message_search_upsert() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     INSERT INTO chat_message_search (message_id, user_id, "timestamp", document)
     SELECT n.id, s.user_id, n.message_timestamp, {document}
     FROM new_rows n JOIN chat_sessions s ON s.id = n.session_id
     WHERE s.user_id IS NOT NULL
     ON CONFLICT (message_id) DO UPDATE
       SET "timestamp" = excluded."timestamp", document = excluded.document;
     RETURN NULL;
   END $$"""

# Every stored document made again as {document} says (of message `m`, row `x`), without the index meanwhile.
REBUILD_SQL = (
    "DROP INDEX chat_message_search_document",
    "UPDATE chat_message_search x SET document = {document} FROM chat_messages m WHERE m.id = x.message_id",
    "CREATE INDEX chat_message_search_document ON chat_message_search USING gin (document)",
)


def switch_to(document: str) -> list[str]:
    """The trigger, then every stored document, made with `document`."""
    return [
        TRIGGER_SQL.format(document=document.format(content="n.content", owner="s.user_id")),
        *(sql.format(document=document.format(content="m.content", owner="x.user_id")) for sql in REBUILD_SQL),
    ]


POSTGRESQL = [
    # An owner's lexeme, quoted for the input of a tsvector or a tsquery.
    r"""CREATE OR REPLACE FUNCTION chat_search_lexeme(p_owner bigint, p_lexeme text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
          SELECT '''' || replace(replace(p_owner::text || '~' || p_lexeme, '\', '\\'), '''', '''''') || ''''
        $$""",
    # The document of a message of p_owner: its words (chat_search_document), each with its owner.
    """CREATE OR REPLACE FUNCTION chat_owned_document(p_content text, p_owner bigint) RETURNS tsvector
       LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
         SELECT COALESCE(string_agg(chat_search_lexeme(p_owner, t.lexeme) || ':' || array_to_string(t.positions, ','),
                                    ' '), '')::tsvector
         FROM unnest(chat_search_document(p_content)) t
       $$""",
    # A search of p_owner: every word of the query (as plainto_tsquery reads it), with
    # its owner. NULL for a query without words, which finds nothing.
    """CREATE OR REPLACE FUNCTION chat_owned_query(p_q text, p_owner bigint) RETURNS tsquery
       LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
         SELECT string_agg(chat_search_lexeme(p_owner, t.lexeme), ' & ')::tsquery
         FROM unnest(to_tsvector('simple'::regconfig, chat_unaccent(p_q))) t
       $$""",
    *switch_to(NEW_DOCUMENT),
]

POSTGRESQL_REVERSE = [
    *switch_to(OLD_DOCUMENT),
    "DROP FUNCTION chat_owned_query(text, bigint)",
    "DROP FUNCTION chat_owned_document(text, bigint)",
    "DROP FUNCTION chat_search_lexeme(bigint, text)",
]


def run(statements: list[str]):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement, params=None)

    return operation


class Migration(migrations.Migration):
    dependencies = [("chat", "0009_session_write_sql_file")]

    operations = [migrations.RunPython(run(POSTGRESQL), run(POSTGRESQL_REVERSE))]
