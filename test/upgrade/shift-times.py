"""Moves every time stored in a `wrangler dev` state directory's Durable Objects forward by an
offset (milliseconds), so that the state reads as if its server had stopped a moment ago: every
integer column value that is a time in milliseconds (the only integers this large) is shifted,
alarms included, and so is every such number inside a column's JSON text (an open input request
keeps its expiry there). For test/e2e/upgrade.test.ts, which starts today's code on an old state."""
import json, os, sqlite3, sys

state, offset = sys.argv[1], int(sys.argv[2])
LOW, HIGH = 1_500_000_000_000, 2_500_000_000_000


def shifted(value):
    if isinstance(value, int) and not isinstance(value, bool) and LOW <= value <= HIGH:
        return value + offset
    if isinstance(value, list):
        return [shifted(v) for v in value]
    if isinstance(value, dict):
        return {k: shifted(v) for k, v in value.items()}
    return value


do_root = os.path.join(state, "v3", "do")
for namespace in os.listdir(do_root):
    for file in os.listdir(os.path.join(do_root, namespace)):
        if not file.endswith(".sqlite"):
            continue
        db = sqlite3.connect(os.path.join(do_root, namespace, file))
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                db.execute(
                    f'UPDATE "{table}" SET "{column}" = "{column}" + ? WHERE typeof("{column}") = \'integer\' AND "{column}" BETWEEN ? AND ?',
                    (offset, LOW, HIGH),
                )
                try:
                    texts = db.execute(
                        f'SELECT rowid, "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\' AND substr("{column}", 1, 1) IN (\'{{\', \'[\')'
                    ).fetchall()
                except sqlite3.OperationalError:  # a table without rowids (workerd's own): no JSON of ours
                    continue
                for rowid, text in texts:
                    try:
                        value = json.loads(text)
                    except ValueError:
                        continue
                    moved = shifted(value)
                    if moved != value:
                        db.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?', (json.dumps(moved, separators=(",", ":"), ensure_ascii=False), rowid))
        db.commit()
        db.close()
