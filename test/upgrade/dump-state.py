"""Dumps a `wrangler dev` state directory (its Durable Objects' SQLite databases and its R2
objects) as JSON on stdout, for an upgrade fixture (see make-fixture.ts)."""
import base64, json, os, sqlite3, sys

state = sys.argv[1]


def value(v):
    return {"$blob": base64.b64encode(v).decode()} if isinstance(v, bytes) else v


def dump_db(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    master = db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
    ).fetchall()
    tables = [(name, sql) for kind, name, sql in master if kind == "table"]
    rows = {}
    for name, _ in tables:
        cursor = db.execute(f'SELECT * FROM "{name}"')
        columns = [c[0] for c in cursor.description]
        rows[name] = [{c: value(v) for c, v in zip(columns, row)} for row in cursor.fetchall()]
    return {
        "tables": [sql for _, sql in tables],
        "indexes_and_triggers": [sql for kind, _, sql in master if kind in ("index", "trigger")],
        "rows": rows,
    }


objects = {}
do_root = os.path.join(state, "v3", "do")
for namespace in sorted(os.listdir(do_root)):
    if namespace.startswith("miniflare-"):
        continue
    cls = namespace.split("-")[-1]
    for file in sorted(os.listdir(os.path.join(do_root, namespace))):
        if file.endswith(".sqlite") and file != "metadata.sqlite":
            objects.setdefault(cls, []).append(dump_db(os.path.join(do_root, namespace, file)))

r2 = {}
r2_root = os.path.join(state, "v3", "r2")
meta_dir = os.path.join(r2_root, "miniflare-R2BucketObject")
if os.path.isdir(meta_dir):
    for file in os.listdir(meta_dir):
        if not file.endswith(".sqlite") or file == "metadata.sqlite":
            continue
        db = sqlite3.connect(f"file:{os.path.join(meta_dir, file)}?mode=ro", uri=True)
        for key, blob_id in db.execute("SELECT key, blob_id FROM _mf_objects WHERE blob_id IS NOT NULL"):
            for bucket in os.listdir(r2_root):
                blob = os.path.join(r2_root, bucket, "blobs", blob_id)
                if os.path.exists(blob):
                    r2[key] = base64.b64encode(open(blob, "rb").read()).decode()

json.dump({"objects": objects, "r2": r2}, sys.stdout, indent=1, sort_keys=True)
