"""What a stopped `wrangler dev` state directory still holds: R2 objects, job objects with tables,
and the tenant objects' rows (projection rows, idempotency keys, places in line). For
`npm run bench:soak`, which expects all of them to be 0 after every job was deleted."""
import json, os, sqlite3, sys

state = sys.argv[1]
counts = {"r2_objects": 0, "job_objects_with_tables": 0, "job_objects_seen": 0, "projection_rows": 0, "idempotency_keys": 0, "tombstones": 0, "line_places": 0}


def user_tables(db):
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != '__miniflare_do_name'")]


def count(db, table):
    return db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] if table in user_tables(db) else 0


r2_meta = os.path.join(state, "v3", "r2", "miniflare-R2BucketObject")
if os.path.isdir(r2_meta):
    for f in os.listdir(r2_meta):
        if f.endswith(".sqlite") and f != "metadata.sqlite":
            counts["r2_objects"] += count(sqlite3.connect(os.path.join(r2_meta, f)), "_mf_objects")

do_root = os.path.join(state, "v3", "do")
for namespace in os.listdir(do_root) if os.path.isdir(do_root) else []:
    for f in os.listdir(os.path.join(do_root, namespace)):
        if not f.endswith(".sqlite") or f == "metadata.sqlite":
            continue
        db = sqlite3.connect(os.path.join(do_root, namespace, f))
        if namespace.endswith("-RunObject"):
            counts["job_objects_seen"] += 1
            counts["job_objects_with_tables"] += 1 if user_tables(db) else 0
        elif namespace.endswith("-TenantProjection"):
            counts["projection_rows"] += count(db, "jobs")
            counts["idempotency_keys"] += count(db, "idempotency")
            counts["tombstones"] += count(db, "tombstones")
        elif namespace.endswith("-TenantLine"):
            counts["line_places"] += count(db, "places")

json.dump(counts, sys.stdout)
